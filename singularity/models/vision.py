"""BEiT vision encoder (transformers ``BeitModel``) and the temporal encoder of Singularity-temporal."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.nn import functional as F
from transformers import BeitConfig, BeitModel

from singularity.models.xbert import ATTN_IMPLEMENTATIONS, XBertEncoder, init_bert_weights, load_bert_config


def load_beit_config(path_or_dict, image_res: int | None = None, attn_implementation: str = "sdpa") -> BeitConfig:
    """Return the BEiT config (JSON file or dict) with ``image_size`` set to ``image_res`` (attention: sdpa/eager)."""
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {attn_implementation!r}")
    data = dict(path_or_dict) if isinstance(path_or_dict, dict) else json.loads(Path(path_or_dict).read_text())
    if image_res is not None:
        data["image_size"] = int(image_res)
    cfg = BeitConfig(**data)
    cfg._attn_implementation = attn_implementation
    return cfg


def build_vision_encoder(config: BeitConfig) -> BeitModel:
    """BEiT with the mean-pool pooler (``pooler.layernorm``), relative position bias per layer."""
    return BeitModel(config, add_pooling_layer=True)


def build_temporal_encoder(bert_config_path, num_layers: int, width: int,
                           attn_implementation: str = "sdpa") -> XBertEncoder:
    """BERT layers without cross-attention attending across frames at each spatial position (spec 4.1)."""
    cfg = load_bert_config(bert_config_path, attn_implementation=attn_implementation)
    cfg.num_hidden_layers = num_layers
    cfg.fusion_layer = num_layers
    cfg.hidden_size = width
    cfg.encoder_width = width
    encoder = XBertEncoder(cfg)
    init_bert_weights(encoder, cfg.initializer_range)
    return encoder


def resize_temporal_embeddings(embed: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Temporal embeddings for ``num_frames`` frames: first rows, or linear interpolation over time (spec 4.5)."""
    if num_frames <= embed.shape[1]:
        return embed[:, :num_frames]
    x = embed.squeeze(2).permute(0, 2, 1)  # (1, d, T)
    x = F.interpolate(x, size=num_frames, mode="linear")
    return x.permute(0, 2, 1).unsqueeze(2)

