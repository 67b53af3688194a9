"""Publishable Singularity checkpoints: ``config.json`` + ``model.safetensors`` + ``README.md`` (issue 16).

The settings written to ``config.json`` rebuild the model without any file of this repository: the BEiT and
BERT configurations are stored inline, with the task, frame count, temporal modules and heads.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from common.checkpoint import CheckpointError
from common.errors import InputError
from common.pretrained import load_into, read_pretrained, save_pretrained

PAPER = "singularity"
TITLE = "Singularity (Lei et al., Revealing Single Frame Bias for Video-and-Language Learning, ACL 2023)"
TASKS = {"pretrain": "video/image-text pre-training (ITC + ITM + MLM)",
         "retrieval": "text-video retrieval (ITC top-k re-ranked by ITM); multiple choice by ITM",
         "vqa": "video question answering by answer-list ranking"}
_BERT_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
              "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id", "fusion_layer")
_BEIT_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
              "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps",
              "patch_size", "num_channels", "use_mask_token", "use_absolute_position_embeddings",
              "use_relative_position_bias", "use_shared_relative_position_bias", "layer_scale_init_value",
              "drop_path_rate", "use_mean_pooling")


def model_settings(model) -> dict:
    """The plain-JSON settings of ``model`` (a Singularity task model)."""
    from singularity.models.config_paths import cfg_get

    get = lambda key, default=None: cfg_get(model.config, key, default)  # noqa: E731
    beit = model.vision_encoder.config
    bert = model.bert_config
    settings = {
        "task": model.TASK,
        "vit_config": {key: getattr(beit, key) for key in _BEIT_KEYS},
        "bert_config": {key: getattr(bert, key) for key in _BERT_KEYS},
        "image_res": int(beit.image_size),
        "attn_implementation": str(get("attn_implementation", "sdpa")),
        "video_input": {"num_frames": int(model.num_frames)},
        "add_temporal_embed": bool(model.add_temporal_embed),
        "temporal_vision_encoder": {"enable": bool(model.use_temporal_encoder),
                                    "num_layers": int(get("temporal_vision_encoder.num_layers", 2)),
                                    "update_pooler_embed": bool(model.update_pooler_embed)},
        "special_tokens": {"cls": int(getattr(model, "cls_token_id", 101)),
                           "mask": int(getattr(model, "mask_token_id", 103))},
    }
    if model.TASK in ("pretrain", "retrieval"):
        settings.update(embed_dim=int(model.vision_proj.out_features), temp=float(model.temp.detach()),
                        itm_hard_neg=bool(model.itm_hard_neg), loss_weight=dict(model.loss_weight),
                        mlm_prob=float(get("mlm_prob", 0.5)))
    else:
        settings.update(num_decoder_layers=int(model.text_decoder.config.num_hidden_layers),
                        eval_frame_ensemble=str(model.frame_ensemble))
    return settings


def _card_metrics(metrics_file: str | Path | None) -> dict:
    """Flat ``{name: number}`` of a results JSON (``eval_res_best.json``: ``{"test/": {"r_mean": ..}}``)."""
    if metrics_file is None:
        return {}
    path = Path(metrics_file)
    if not path.is_file():
        raise InputError(path, "results file not found", field="metrics_file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON ({err.msg} at line {err.lineno})", field="metrics_file") from None
    flat = {}

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}{key}" if prefix.endswith("/") or not prefix else f"{prefix}/{key}", value)
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            flat[prefix or "value"] = node

    walk("", data)
    if not flat:
        raise InputError(path, "holds no numeric results", field="metrics_file")
    return flat


def save(model, directory: str | Path, metrics_file: str | Path | None = None) -> Path:
    """``save_pretrained`` of a Singularity model."""
    directory = Path(directory)
    metrics = _card_metrics(metrics_file)
    cls = type(model).__name__
    card = {"title": TITLE, "paper": "Lei, Berg, Bansal: Revealing Single Frame Bias for Video-and-Language "
                                     "Learning (ACL 2023), https://github.com/jayleicn/singularity",
            "task": TASKS[model.TASK], "training_data": "see the run's config.yaml (train_file)",
            "metrics": metrics, "metrics_source": str(metrics_file) if metrics_file else None,
            "how_to_load": f"from singularity.models.{'vqa' if model.TASK == 'vqa' else 'singularity'} import {cls}\n"
                           f"model = {cls}.from_pretrained(\"{directory.name}\")"}
    return save_pretrained(model, directory, paper=PAPER, architecture=cls, config=model_settings(model), card=card)


def load(cls, directory: str | Path):
    """``from_pretrained``: rebuild from ``config.json``, strictly load ``model.safetensors``."""
    from singularity.models.build import build_model_for_task

    config, state_dict = read_pretrained(directory, paper=PAPER)
    config_path = Path(directory) / "config.json"
    task = config.get("task")
    if task not in TASKS:
        raise CheckpointError(config_path, f"unknown task {task!r} (one of {', '.join(TASKS)})", field="task")
    if cls.__name__ != "SingularityBase" and cls.TASK != task:
        raise CheckpointError(config_path, f"holds a {config.get('architecture')} ({task}) model, not a "
                                           f"{cls.__name__}", field="architecture")
    settings = {k: v for k, v in config.items() if k not in ("paper", "architecture", "layout_version",
                                                             "special_tokens")}
    try:
        model = build_model_for_task(task, OmegaConf.create(settings))
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(config_path, f"settings do not build a model: {err}") from None
    tokens = config.get("special_tokens") or {}
    if hasattr(model, "cls_token_id"):
        model.cls_token_id = int(tokens.get("cls", model.cls_token_id))
        model.mask_token_id = int(tokens.get("mask", model.mask_token_id))
    with torch.no_grad():
        load_into(model, state_dict, Path(directory) / "model.safetensors")
    return model.eval()
