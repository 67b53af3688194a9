"""Model construction and checkpoint loading shared by the task entry points (spec 6.3, pitfalls 9.1/9.2)."""
from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig, OmegaConf

from common.checkpoint import compare_keys
from common.errors import InputError
from singularity.convert import (TableSizeError, convert_state_dict, fit_learned_tables, infer_architecture,
                                 read_checkpoint)
from singularity.models.build import build_model_for_task
from singularity.models.config_paths import cfg_get

logger = logging.getLogger("singularity")

__all__ = ["build_model_for_task", "read_checkpoint", "apply_inferred_architecture", "load_pretrained",
           "check_test_frames", "setup_model"]


def apply_inferred_architecture(config: DictConfig, state_dict: dict) -> dict:
    """Set the temporal flags and frame count implied by the checkpoint's keys; returns what changed.

    ``video_input.num_frames`` follows the checkpoint's ``temporal_embeddings`` (pitfall 9.2 F: a
    ``*_singularity_temporal_*`` file has 4 learned rows, and a 1-frame model would keep only the first) unless
    ``resize_learned_tables=True`` asks to keep the configured count and pad/truncate the table as the original.
    """
    changed = {}
    keep_frames = bool(cfg_get(config, "resize_learned_tables", False))
    for key, value in infer_architecture(state_dict).items():
        if key == "video_input.num_frames" and keep_frames:
            continue
        if OmegaConf.select(config, key) != value:
            changed[key] = value
            OmegaConf.update(config, key, value, merge=True)
    if changed:
        logger.warning("architecture inferred from the checkpoint keys overrides the config: %s", changed)
    return changed


def check_test_frames(config: DictConfig) -> None:
    """Refuse an evaluation frame count that would truncate / interpolate learned temporal embeddings silently.

    The original resizes them on the fly (spec 4.5: first rows, or linear interpolation); here that takes
    ``resize_learned_tables=True``.
    """
    if not cfg_get(config, "add_temporal_embed", False) or cfg_get(config, "resize_learned_tables", False):
        return
    train, test = int(cfg_get(config, "video_input.num_frames", 1)), int(cfg_get(config, "video_input.num_frames_test", 4))
    if train != test:
        how = "interpolate" if test > train else "truncate"
        raise InputError(cfg_get(config, "pretrained_path", "config"), f"evaluating {test} frames would {how} the model's {train} learned temporal "
                                   f"embeddings; set video_input.num_frames_test={train}, or pass "
                                   "resize_learned_tables=True (the original's behaviour)",
                         field="video_input.num_frames_test")


def load_pretrained(model: torch.nn.Module, state_dict: dict, allow_partial: bool = False, source: str = "checkpoint",
                    resize_tables: bool = False):
    """Convert by key presence and load; missing/unexpected keys fail unless ``allow_partial`` (pitfall 9.1 F).

    Learned tables of another size fail unless ``resize_tables``; resizes are logged and named in the summary.
    """
    target = model.module if hasattr(model, "module") else model
    model_sd = target.state_dict()
    shapes = {k: tuple(v.shape) for k, v in model_sd.items()}
    fusion = getattr(getattr(target, "bert_config", None), "fusion_layer", 9)
    converted = convert_state_dict(state_dict, list(shapes), fusion_layer=fusion)
    try:
        notes = fit_learned_tables(converted, shapes, allow_resize=resize_tables)
    except TableSizeError as err:
        raise InputError(source, f"learned table of another size: {err}; pass resize_learned_tables=True to resize "
                                 "it (logged)", field="pretrained_path") from None
    report = compare_keys(shapes, converted)
    if not report.ok and not allow_partial:
        raise InputError(source, f"{report.summary()}: {report.details(8)}; pass allow_partial=True to start "
                                 "the missing modules from random initialisation", field="pretrained_path")
    for key, value in converted.items():
        if key in model_sd and model_sd[key].is_floating_point() != value.is_floating_point():
            raise InputError(source, f"dtype {value.dtype} where the model has {model_sd[key].dtype}",
                             field=f"model.{key}")
    bad = {k for k, _, _ in report.mismatched}
    usable = {k: v for k, v in converted.items() if k in shapes and k not in bad}
    target.load_state_dict(usable, strict=False)
    if notes:
        logger.warning("%s from %s; resized learned tables: %s", report.summary(), source, "; ".join(notes))
    else:
        logger.info("%s from %s", report.summary(), source)
    if report.missing or report.mismatched:
        logger.warning("initialised fresh (not in %s): %s", source, report.details(50))
    report.resized = notes
    return report


def setup_model(task: str, config: DictConfig, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Build the task model, infer the architecture from ``pretrained_path`` and load it; returns (model, ckpt)."""
    checkpoint, state = {}, None
    path = cfg_get(config, "pretrained_path")
    if path:
        checkpoint, state = read_checkpoint(str(path), trust=bool(cfg_get(config, "trust_checkpoint", False)))
        apply_inferred_architecture(config, state)
    check_test_frames(config)
    model = build_model_for_task(task, config)
    if state is not None:
        load_pretrained(model, state, allow_partial=bool(cfg_get(config, "allow_partial", False)), source=str(path),
                        resize_tables=bool(cfg_get(config, "resize_learned_tables", False)))
    return model.to(device), checkpoint
