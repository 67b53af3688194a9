"""Caption models and the factory that maps `--caption_model` to a class (spec 0 decision)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from spatial_captioning.models.decoding import CONFIG_KEYS, CaptionModel
from spatial_captioning.models.relation_transformer import RelationTransformerModel
from spatial_captioning.models.show_tell import ShowAndTell
from spatial_captioning.models.transformer import TransformerModel

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
GRID_MODELS = ("spatial_pe",)
TRANSFORMER_MODELS = ("spatial_pe", "transformer", "vanilla")
ORT_MODELS = ("ort", "relation_transformer")
CAPTION_MODELS = TRANSFORMER_MODELS + ORT_MODELS + ("show_tell",)
# Names listed by the original's help whose model code was never published (spec 0).
UNPUBLISHED_MODELS = ("local", "spatial", "new_local", "diff_local", "diff_local2", "spatial_pe2", "spatial_pe3",
                      "normed_spatial_pe", "normed_spatial_pe2", "show_attend_tell")


def load_config(name: str, **overrides: Any) -> SimpleNamespace:
    """Read models/configs/<name>.json (model sizes are data) and apply overrides."""
    path = CONFIG_DIR / f"{name}.json"
    cfg = json.loads(path.read_text())
    cfg.update(overrides)
    return SimpleNamespace(**cfg)


def model_config(opt: Any) -> dict[str, Any]:
    """The plain-JSON options of `opt` that rebuild its model (save_pretrained's config.json)."""
    get = opt.get if isinstance(opt, dict) else lambda k, d=None: getattr(opt, k, d)
    config = {}
    for key in CONFIG_KEYS:
        value = get(key, None)
        if value is not None:
            config[key] = value.item() if hasattr(value, "item") else value
    return config


def setup(opt: Any) -> CaptionModel:
    """Build the model named by opt.caption_model; `model.config` records what rebuilds it."""
    model = _build(opt)
    model.config = model_config(opt)
    return model


def _build(opt: Any) -> CaptionModel:
    name = opt.caption_model
    if name in TRANSFORMER_MODELS:
        if name in GRID_MODELS and not getattr(opt, "use_grid", False):
            opt.use_grid = True  # spec 9.1: spatial_pe means the grid-enabled transformer
        return TransformerModel(opt)
    if name in ORT_MODELS:
        return RelationTransformerModel(opt)
    if name == "show_tell":
        return ShowAndTell(opt)
    if name in UNPUBLISHED_MODELS:
        raise ValueError(f"--caption_model {name}: the original never published this model's code (spec 0)")
    raise ValueError(f"unknown --caption_model {name!r}; choose from {CAPTION_MODELS}")


def build_on_meta(opt: Any) -> CaptionModel:
    """Build the model without allocating weights (parameters live on the meta device)."""
    with torch.device("meta"):
        return setup(opt)


__all__ = ["CaptionModel", "TransformerModel", "RelationTransformerModel", "ShowAndTell", "setup", "build_on_meta",
           "load_config", "model_config", "CAPTION_MODELS", "CONFIG_KEYS"]
