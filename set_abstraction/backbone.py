"""A 3D ResNet video backbone (bottleneck blocks, global average pool) giving one feature per clip.

The released features are 2048-d pooled 3D-ResNet-50 features (spec 1) of the Moments in Time model
(``moments_models``: ``moments_RGB_imagenet_resnet3d50_segment16.pth.tar`` and its multi-label
``multi_moments_v2`` sibling, ``{'state_dict': {'module.conv1.weight', ..., 'module.last_linear.*'}}``)
and the Kinetics model of ``pretorched`` (``resnet3d50_kinetics-bd7d15a4.pth``, a plain state dict with
``fc.*``). Both are the same network: a 7x7x7 stem conv (stride 1x2x2), a 3x3x3 max-pool (stride 2),
bottleneck stages whose first block strides 2 in time and space, average pool, a classifier.
``ResNet3d`` reproduces that layout and names; ``convert_backbone_state_dict`` maps either published
file onto it strictly (the classifier is checked and dropped: features are taken before it).
Tests use random weights and narrow configurations.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.checkpoint import load_checkpoint_file, load_state_dict_strict
from common.errors import InputError

ARCHS = {"resnet3d50": (3, 4, 6, 3), "resnet3d26": (2, 2, 2, 2), "resnet3d14": (1, 1, 1, 1)}
TORCHVISION_ARCHS = {"tv_r3d_18": "r3d_18", "tv_mc3_18": "mc3_18", "tv_r2plus1d_18": "r2plus1d_18"}
KINETICS_MEAN = [0.43216, 0.394666, 0.37645]
KINETICS_STD = [0.22803, 0.22145, 0.216989]


@dataclass
class BackboneConfig:
    """Depth per stage and base width (64 gives the 2048-d resnet3d50 feature)."""

    layers: tuple[int, ...] = (3, 4, 6, 3)
    width: int = 64
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])

    @property
    def feature_dim(self) -> int:
        """Output size: 8 * 4 * width."""
        return self.width * 8 * Bottleneck3d.expansion


class Bottleneck3d(nn.Module):
    """1x1x1 -> 3x3x3 -> 1x1x1 convolutions with a residual connection."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv3d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != out:
            self.downsample = nn.Sequential(nn.Conv3d(in_planes, out, 1, stride=stride, bias=False),
                                            nn.BatchNorm3d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + identity)


class ResNet3d(nn.Module):
    """[B, 3, T, H, W] clips -> [B, feature_dim] pooled (non-negative) features."""

    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.conv1 = nn.Conv3d(3, w, kernel_size=7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        in_planes = w
        for i, blocks in enumerate(config.layers):
            planes = w * 2**i
            stage = []
            for b in range(blocks):
                stage.append(Bottleneck3d(in_planes, planes, stride=1 if i == 0 or b > 0 else 2))
                in_planes = planes * Bottleneck3d.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.num_stages = len(config.layers)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        for m in self.modules():  # the published ResNet3D.init_weights (random weights keep their scale)
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.avgpool(x).flatten(1)


class TorchvisionVideoBackbone(nn.Module):
    """A torchvision video ResNet (r3d_18, mc3_18, r2plus1d_18) with its classifier removed: 512-d features."""

    def __init__(self, name: str):
        super().__init__()
        try:
            from torchvision.models import video as tv_video
        except ImportError as err:  # torchvision is optional: this project's CPU stack has no working build
            raise ImportError(f"arch {name!r} needs torchvision (install the build matching your torch); "
                              f"the resnet3d* archs need nothing extra") from err
        self.net = getattr(tv_video, name)(weights=None)
        self.net.fc = nn.Identity()
        self.config = BackboneConfig(layers=(), width=64, mean=KINETICS_MEAN, std=KINETICS_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_backbone(arch: str = "resnet3d50", width: int = 64) -> nn.Module:
    """A ResNet3d by name (resnet3d50/26/14) and base width, or a torchvision video ResNet (tv_*)."""
    if arch in TORCHVISION_ARCHS:
        return TorchvisionVideoBackbone(TORCHVISION_ARCHS[arch])
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r} (choices: {', '.join([*ARCHS, *TORCHVISION_ARCHS])})")
    return ResNet3d(BackboneConfig(layers=ARCHS[arch], width=width))


CLASSIFIER_NAMES = ("last_linear", "fc")  # moments_models renames fc to last_linear; pretorched keeps fc


def convert_backbone_state_dict(obj: Any, model: nn.Module, source: str | Path) -> dict[str, torch.Tensor]:
    """A published 3D ResNet-50 file (or this backbone's own state dict) -> ``model``'s keys.

    Accepts ``{'state_dict': ...}`` (moments_models) or a plain state dict (pretorched); strips
    DataParallel's ``module.``; checks and drops the classifier (``last_linear.*`` or ``fc.*``, shape
    [classes, feature_dim]); BatchNorm ``num_batches_tracked`` counters, which files saved before
    PyTorch 0.4.1 lack, are filled with 0 only when all of them are missing. Every other key must match.
    """
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else obj
    if not isinstance(state, Mapping) or not state:
        raise InputError(source, "expected a state dict (or a dict with 'state_dict') of backbone weights",
                         field="state_dict")
    state = {(k[len("module."):] if isinstance(k, str) and k.startswith("module.") else k): v
             for k, v in state.items()}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise InputError(source, f"weight {key!r} is {type(value).__name__}, not a tensor", field=str(key))
        if value.is_floating_point() and value.device.type != "meta" and not torch.isfinite(value).all():
            raise InputError(source, f"weight {key!r} holds NaN or inf values", field=str(key))
    feature_dim = model.config.feature_dim if isinstance(model, ResNet3d) else None
    classifiers = [name for name in CLASSIFIER_NAMES if f"{name}.weight" in state]
    if len(classifiers) > 1:
        raise InputError(source, "holds both last_linear.* and fc.* classifiers", field="fc.weight")
    for name in classifiers:
        weight = state.pop(f"{name}.weight")
        bias = state.pop(f"{name}.bias", None)
        if weight.dim() != 2 or (feature_dim is not None and weight.shape[1] != feature_dim):
            raise InputError(source, f"classifier shape {list(weight.shape)} does not take {feature_dim}-d "
                                     "features (is this a 3D ResNet-50?)", field=f"{name}.weight")
        if bias is None or bias.shape != weight.shape[:1]:
            raise InputError(source, f"missing or mis-shaped classifier bias for {list(weight.shape)}",
                             field=f"{name}.bias")
    counters = [k for k in model.state_dict() if k.endswith("num_batches_tracked")]
    if counters and not any(k in state for k in counters):
        state.update({k: torch.zeros((), dtype=torch.long) for k in counters})
    return state


def load_backbone_weights(model: nn.Module, path: str | Path, trust: bool = False) -> nn.Module:
    """Read ``path`` with the restricted loader, convert it and load it strictly into ``model``."""
    obj = load_checkpoint_file(path, trust=trust)
    load_state_dict_strict(model, convert_backbone_state_dict(obj, model, path), strict=True, source=path)
    return model


PUBLISHED_KEY_FILE = (Path(__file__).resolve().parents[1] / "tests" / "set_abstraction" / "fixtures"
                      / "resnet3d50_published_keys.txt")


def parse_backbone_key_file(path: str | Path) -> dict[str, dict[str, tuple[int, ...]]]:
    """{layout: {key: shape}} from a key list with ``[layout]`` section lines."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "key file not found")
    sections: dict[str, dict[str, tuple[int, ...]]] = {}
    current = None
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith("[") and line.rstrip().endswith("]"):
            current = sections.setdefault(line.strip()[1:-1], {})
            continue
        try:
            key, shape = line.split("\t")
            dims = tuple(int(x) for x in shape.strip().strip("[]").split(",") if x.strip())
        except ValueError:
            raise InputError(path, f"expected '<key>\\t[<shape>]', got {line!r}", record=f"line {lineno}") from None
        if current is None:
            raise InputError(path, "a key before any [layout] line", record=f"line {lineno}")
        current[key] = dims
    return sections


def check_backbone_keys(path: str | Path = PUBLISHED_KEY_FILE) -> dict[str, str]:
    """Convert + strictly load a meta-tensor file of each listed layout into resnet3d50: {layout: summary}."""
    results = {}
    for layout, keys in parse_backbone_key_file(path).items():
        with torch.device("meta"):
            model = build_backbone("resnet3d50")
            state = {k: torch.empty(shape) for k, shape in keys.items()}
        converted = convert_backbone_state_dict({"state_dict": state}, model, f"{path} [{layout}]")
        report = load_state_dict_strict(model, converted, strict=True, source=f"{path} [{layout}]")
        dropped = len(keys) - len([k for k in keys if k.split("module.")[-1] in converted])
        results[layout] = f"{report.summary()}, {dropped} classifier keys checked and dropped"
    return results
