"""Model construction and checkpoint loading shared by the task entry points (spec 6.3, pitfalls 9.1/9.2)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from common.checkpoint import compare_keys, extract_state_dict, load_checkpoint_file
from common.errors import InputError
from singularity.convert import convert_state_dict, infer_architecture
from singularity.models.config_paths import cfg_get

logger = logging.getLogger("singularity")


def build_model_for_task(task: str, config) -> torch.nn.Module:
    """``pretrain`` / ``retrieval`` / ``vqa`` model for ``config``."""
    from singularity.models.singularity import SingularityPretrain, SingularityRetrieval
    from singularity.models.vqa import SingularityQA

    classes = {"pretrain": SingularityPretrain, "retrieval": SingularityRetrieval, "vqa": SingularityQA}
    if task not in classes:
        raise ValueError(f"unknown task {task!r}")
    return classes[task](config)


def read_checkpoint(path: str, trust: bool = False) -> tuple[dict, dict]:
    """(full checkpoint dict, model state dict) of ``path``; only ``model`` is required (spec 6.1)."""
    if not Path(path).is_file():
        raise InputError(path, "checkpoint file not found", field="pretrained_path")
    obj = load_checkpoint_file(path, trust=trust)
    return (obj if isinstance(obj, dict) else {}), extract_state_dict(obj)


def apply_inferred_architecture(config: DictConfig, state_dict: dict) -> dict:
    """Set temporal flags / frame count implied by the checkpoint's keys; returns what changed."""
    changed = {}
    for key, value in infer_architecture(state_dict).items():
        if key == "video_input.num_frames":
            continue  # temporal embeddings are padded/truncated to the configured frames (spec 4.5)
        if OmegaConf.select(config, key) != value:
            changed[key] = value
            OmegaConf.update(config, key, value, merge=True)
    if changed:
        logger.warning("architecture inferred from the checkpoint keys overrides the config: %s", changed)
    return changed


def load_pretrained(model: torch.nn.Module, state_dict: dict, allow_partial: bool = False, source: str = "checkpoint"):
    """Convert by key presence and load; missing/unexpected keys fail unless ``allow_partial`` (pitfall 9.1 F)."""
    target = model.module if hasattr(model, "module") else model
    shapes = {k: tuple(v.shape) for k, v in target.state_dict().items()}
    fusion = getattr(getattr(target, "bert_config", None), "fusion_layer", 9)
    converted = convert_state_dict(state_dict, list(shapes), shapes, fusion_layer=fusion)
    report = compare_keys(shapes, converted)
    if not report.ok and not allow_partial:
        raise InputError(source, f"{report.summary()}: {report.details(8)}; pass allow_partial=True to start "
                                 "the missing modules from random initialisation", field="pretrained_path")
    bad = {k for k, _, _ in report.mismatched}
    usable = {k: v for k, v in converted.items() if k in shapes and k not in bad}
    target.load_state_dict(usable, strict=False)
    logger.info("%s from %s", report.summary(), source)
    if report.missing or report.mismatched:
        logger.warning("initialised fresh (not in %s): %s", source, report.details(50))
    return report


def setup_model(task: str, config: DictConfig, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Build the task model, infer the architecture from ``pretrained_path`` and load it; returns (model, ckpt)."""
    checkpoint, state = {}, None
    path = cfg_get(config, "pretrained_path")
    if path:
        checkpoint, state = read_checkpoint(str(path), trust=bool(cfg_get(config, "trust_checkpoint", False)))
        apply_inferred_architecture(config, state)
    model = build_model_for_task(task, config)
    if state is not None:
        load_pretrained(model, state, allow_partial=bool(cfg_get(config, "allow_partial", False)), source=str(path))
    return model.to(device), checkpoint
