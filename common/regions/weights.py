"""Strict import of the released detector weights, and small random weight files in the same layouts.

* detectron2 model zoo ``model_final_*.pkl``: a plain pickle ``{"model": {name: numpy array}, "__author__": ...}``,
  read with the restricted unpickler (``common.safe_pickle.load_pickle``; full unpickling only with trust).
* bottom-up-attention.pytorch ``bua-caffe-frcn-r101_with_attributes.pth``: a torch file holding the state dict,
  bare or under ``"model"``, read weights-only / restricted (``common.safe_pickle.torch_load``).

Every key of the file must map onto the model and every model key must be present with its shape; the only keys
tolerated beyond the model's are ``pixel_mean`` / ``pixel_std`` (3 values, older detectron2 saves) and, in the
bottom-up layout, ``num_batches_tracked`` counters of the res4/res5 batch norms (they were ``BN``, not frozen,
in that config). The architecture (widths, block counts, classes) is read from the file's shapes, so the same code
loads the real files and the tiny test files.
"""
from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.checkpoint import load_state_dict_strict
from common.errors import InputError
from common.regions.detectors import BottomUpC4, BottomUpConfig, Detectron2C4, Detectron2Config
from common.regions.trunk import TrunkConfig
from common.safe_pickle import CheckpointError, load_pickle, torch_load

LAYOUTS = ("detectron2", "bottom_up")
TINY_TRUNK = TrunkConfig(stem_channels=8, res2_channels=16, bottleneck_channels=4)
_PIXEL_KEYS = ("pixel_mean", "pixel_std")
_BN_COUNTER = re.compile(r"^(backbone\.res4|roi_heads\.res5)\..*\.norm\.num_batches_tracked$")
_SIGNATURE = {"detectron2": "roi_heads.mask_head.deconv.weight", "bottom_up": "roi_heads.box_predictor.attr_linear1.weight"}


def _tensor(value: Any, source: str, name: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "fiu":
            raise CheckpointError(source, f"array of dtype {value.dtype}, expected numbers", field=name)
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(source, f"holds a {type(value).__name__}, expected an array", field=name)
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise CheckpointError(source, "holds NaN or infinite values", field=name)
    return value


def read_detectron2_pkl(path: str | Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """The ``model`` dict of a detectron2 model-zoo pickle as tensors (restricted unpickling unless ``trust``)."""
    path = Path(path)
    if path.is_file() and path.read_bytes()[:2] == b"PK":
        raise CheckpointError(path, "a torch zip archive, not a detectron2 model-zoo pickle of {'model': {name: "
                                    "array}} (bottom-up-attention weights belong to the spatial captioning tools)",
                              field="model")
    obj = load_pickle(path, trust=trust)
    if not isinstance(obj, Mapping) or not isinstance(obj.get("model"), Mapping):
        what = f"keys {list(obj)[:5]}" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
        raise CheckpointError(path, f"not a detectron2 model-zoo file: expected {{'model': {{name: array}}}}, "
                                    f"found {what}", field="model")
    return {str(k): _tensor(v, str(path), str(k)) for k, v in obj["model"].items()}


def read_bottom_up_pth(path: str | Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """The state dict of a bottom-up-attention.pytorch ``.pth`` (bare or under ``model``) as tensors."""
    path = Path(path)
    try:
        obj = torch_load(path, trust=trust)
    except CheckpointError:
        if not path.is_file() or path.read_bytes()[:1] != b"\x80":
            raise
        plain = load_pickle(path, trust=trust)  # a plain pickle: detectron2's model-zoo layout?
        if isinstance(plain, Mapping) and isinstance(plain.get("model"), Mapping):
            raise CheckpointError(path, "a detectron2 model-zoo pickle, not a bottom-up-attention .pth (that "
                                        "detector belongs to the VisualCOMET tools)", field="model") from None
        raise
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(path, f"not a bottom-up-attention state dict (found {type(obj).__name__})",
                              field="model")
    return {str(k): _tensor(v, str(path), str(k)) for k, v in obj.items()}


def read_weights(path: str | Path, layout: str, trust: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a detector weight file in ``layout`` (``detectron2`` or ``bottom_up``)."""
    if layout == "detectron2":
        return read_detectron2_pkl(path, trust)
    if layout == "bottom_up":
        return read_bottom_up_pth(path, trust)
    raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")


def _shape(shapes: Mapping[str, tuple[int, ...]], key: str, source: str, layout: str) -> tuple[int, ...]:
    if key not in shapes:
        other = next((name for name, sig in _SIGNATURE.items() if name != layout and sig in shapes), None)
        hint = f" (this looks like the {other} layout)" if other else ""
        raise CheckpointError(source, f"missing: not the {layout} R101-C4 layout{hint}", field=key)
    return tuple(shapes[key])


def _count_blocks(shapes: Mapping[str, Any], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.conv1\.weight$")
    return len({m.group(1) for k in shapes if (m := pattern.match(k))})


def trunk_from_shapes(shapes: Mapping[str, tuple[int, ...]], source: str, layout: str, **fixed: Any) -> TrunkConfig:
    """The trunk widths and block counts a state dict's shapes imply."""
    stem = _shape(shapes, "backbone.stem.conv1.weight", source, layout)[0]
    res2 = _shape(shapes, "backbone.res2.0.conv3.weight", source, layout)[0]
    mid = _shape(shapes, "backbone.res2.0.conv1.weight", source, layout)[0]
    blocks = tuple(_count_blocks(shapes, p) for p in ("backbone.res2", "backbone.res3", "backbone.res4",
                                                        "roi_heads.res5"))
    return TrunkConfig(stem_channels=stem, res2_channels=res2, bottleneck_channels=mid, blocks=blocks, **fixed)


def config_from_shapes(shapes: Mapping[str, tuple[int, ...]], layout: str, source: str = "weights") -> Any:
    """The detector config (``Detectron2Config`` / ``BottomUpConfig``) implied by a state dict's shapes."""
    if layout == "detectron2":
        trunk = trunk_from_shapes(shapes, source, layout)
        return Detectron2Config(
            trunk=trunk, num_classes=_shape(shapes, "roi_heads.mask_head.predictor.weight", source, layout)[0],
            num_anchors=_shape(shapes, "proposal_generator.rpn_head.objectness_logits.weight", source, layout)[0],
            mask_dim=_shape(shapes, "roi_heads.mask_head.deconv.weight", source, layout)[1])
    trunk = trunk_from_shapes(shapes, source, layout, caffe_stem_pool=True, res5_dilation=2)
    base = BottomUpConfig()
    anchors2 = _shape(shapes, "proposal_generator.rpn_head.objectness_logits.weight", source, layout)[0]
    if anchors2 != 2 * base.num_anchors:
        raise CheckpointError(source, f"{anchors2} objectness channels, the Caffe RPN has 2 x {base.num_anchors}",
                              field="proposal_generator.rpn_head.objectness_logits.weight")
    return BottomUpConfig(
        trunk=trunk, num_classes=_shape(shapes, "roi_heads.box_predictor.cls_score.weight", source, layout)[0],
        num_attributes=_shape(shapes, "roi_heads.box_predictor.attr_linear2.weight", source, layout)[0],
        rpn_channels=_shape(shapes, "proposal_generator.rpn_head.conv.weight", source, layout)[0],
        cls_embed_dim=_shape(shapes, "roi_heads.box_predictor.cls_embed.weight", source, layout)[1],
        attr_hidden=_shape(shapes, "roi_heads.box_predictor.attr_linear1.weight", source, layout)[0])


def build_detector(cfg: Any) -> torch.nn.Module:
    """An (untrained) detector for a config."""
    return Detectron2C4(cfg) if isinstance(cfg, Detectron2Config) else BottomUpC4(cfg)


def tolerated_extras(state: Mapping[str, Any], layout: str, source: str) -> list[str]:
    """Keys of ``state`` that are not model parameters but are accepted (checked, then ignored)."""
    extras = []
    for key, value in state.items():
        if key in _PIXEL_KEYS:
            if int(np.prod(tuple(value.shape))) != 3:
                raise CheckpointError(source, f"shape {list(value.shape)}, expected 3 values", field=key)
            extras.append(key)
        elif layout == "bottom_up" and _BN_COUNTER.match(key):
            if tuple(value.shape) != ():
                raise CheckpointError(source, f"shape {list(value.shape)}, expected a scalar counter", field=key)
            extras.append(key)
    return extras


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor], layout: str, source: str) -> None:
    """Load ``state`` into ``model`` strictly (only the documented extras are skipped)."""
    extras = set(tolerated_extras(state, layout, source))
    params = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items() if k not in extras}
    load_state_dict_strict(model, params, strict=True, source=source)


def load_detector(path: str | Path, layout: str, trust: bool = False) -> torch.nn.Module:
    """The detector of a weight file, in eval mode; any key problem is a one-line CheckpointError."""
    state = read_weights(path, layout, trust)
    cfg = config_from_shapes({k: tuple(v.shape) for k, v in state.items()}, layout, str(path))
    model = build_detector(cfg)
    load_into(model, state, layout, str(path))
    return model.eval()


def random_state(cfg: Any, seed: int = 0) -> dict[str, torch.Tensor]:
    """A seeded random state dict of the detector of ``cfg`` (plausible frozen-BN statistics)."""
    torch.manual_seed(seed)
    model = build_detector(cfg)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("norm.weight"):
            value = 0.3 + 0.3 * torch.rand(value.shape, generator=gen)
        elif key.endswith("norm.bias") or key.endswith("running_mean"):
            value = 0.1 * torch.randn(value.shape, generator=gen)
        elif key.endswith("running_var"):
            value = 0.5 + torch.rand(value.shape, generator=gen)
        state[key] = value.detach().clone()
    return state


def write_random_weights(path: str | Path, layout: str, tiny: bool = True, seed: int = 0) -> Path:
    """Write a random weight file in the released ``layout`` (tiny widths by default); returns the path."""
    from common.checkpoint import atomic_torch_save

    path = Path(path)
    trunk = TINY_TRUNK if tiny else None
    if layout == "detectron2":
        cfg = Detectron2Config(trunk=trunk) if trunk else Detectron2Config()
        arrays = {k: v.numpy() for k, v in random_state(cfg, seed).items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as handle:
            pickle.dump({"model": arrays, "__author__": "common.regions random weights"}, handle, protocol=2)
        tmp.replace(path)
        return path
    if layout == "bottom_up":
        base = BottomUpConfig()
        cfg = BottomUpConfig(trunk=TrunkConfig(**{**TINY_TRUNK.__dict__, "caffe_stem_pool": True,
                                                  "res5_dilation": 2})) if tiny else base
        return atomic_torch_save({"model": random_state(cfg, seed)}, path)
    raise InputError(layout, f"unknown layout; expected one of {LAYOUTS}", field="layout")
