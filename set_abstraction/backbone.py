"""A 3D ResNet video backbone (bottleneck blocks, global average pool) giving one feature per clip.

The released features are 2048-d pooled 3D-ResNet-50 features (spec 1). This module reproduces that
layout (conv1/bn1/layer1-4, torchvision-style names) so a user's pretrained 3D-ResNet-50 state dict can
be loaded; tests use random weights and a narrow configuration.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

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
        self.conv1 = nn.Conv3d(3, w, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
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
