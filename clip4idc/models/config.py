"""Model sizes as data: CLIP tower config (spec 4.1) and decoder config, read from configs/*.json."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# OpenAI names the original accepts for --pretrained_clip_name, mapped to config files here.
CLIP_NAMES = {"ViT-B/32": "ViT-B-32", "ViT-B/16": "ViT-B-16"}


@dataclass
class ClipConfig:
    """Sizes of the OpenAI-style CLIP towers plus the pair-encoder split."""

    embed_dim: int = 512
    image_resolution: int = 224
    vision_layers: int = 12
    vision_width: int = 768
    vision_patch_size: int = 32
    context_length: int = 77
    vocab_size: int = 49408
    transformer_width: int = 512
    transformer_heads: int = 8
    transformer_layers: int = 12
    intra_layers: int = 9
    linear_patch: str = "2d"

    @property
    def vision_heads(self) -> int:
        """Heads of the vision tower (width // 64, as OpenAI CLIP)."""
        return max(self.vision_width // 64, 1)

    @property
    def grid(self) -> int:
        """Patches per image side."""
        return self.image_resolution // self.vision_patch_size

    @property
    def tokens_per_image(self) -> int:
        """CLS + grid**2 tokens of one image."""
        return self.grid**2 + 1


@dataclass
class DecoderConfig:
    """UniVL decoder sizes (modules/decoder-base/decoder_config.json)."""

    hidden_size: int = 512
    intermediate_size: int = 2048
    num_attention_heads: int = 8
    num_decoder_layers: int = 3
    max_target_embeddings: int = 77
    vocab_size: int = 49408
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    num_hidden_layers: int = 12
    type_vocab_size: int = 2


def _read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _known(cls, data: dict) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def clip_config_path(name: str) -> Path | None:
    """Config JSON for a CLIP name ('ViT-B/32', 'tiny', or a .json path); None when `name` is not one."""
    if name.endswith(".json") and os.path.isfile(name):
        return Path(name)
    stem = CLIP_NAMES.get(name, name)
    path = CONFIG_DIR / f"{stem}.json"
    return path if path.is_file() else None


def load_clip_config(name: str, **overrides) -> ClipConfig:
    """ClipConfig for a known name or JSON path, with keyword overrides (e.g. intra_layers)."""
    path = clip_config_path(name)
    if path is None:
        raise ValueError(f"unknown CLIP config {name!r}: use one of {sorted(CLIP_NAMES)} or a file in {CONFIG_DIR}")
    data = _known(ClipConfig, _read_json(path))
    data.update({k: v for k, v in overrides.items() if v is not None})
    return ClipConfig(**data)


def load_decoder_config(name: str) -> DecoderConfig:
    """DecoderConfig from a name in configs/ ('decoder-base'), a directory with decoder_config.json, or a JSON file."""
    candidates = [Path(name), Path(name) / "decoder_config.json", CONFIG_DIR / f"{name}.json"]
    for path in candidates:
        if path.is_file():
            return DecoderConfig(**_known(DecoderConfig, _read_json(path)))
    raise ValueError(f"decoder config {name!r} not found (tried {', '.join(map(str, candidates))})")


def load_cross_initializer_range(name: str) -> float:
    """initializer_range of the cross config (the only field the original reads, spec 4.1)."""
    for path in [Path(name), Path(name) / "cross_config.json", CONFIG_DIR / f"{name}.json"]:
        if path.is_file():
            return float(_read_json(path).get("initializer_range", 0.02))
    raise ValueError(f"cross config {name!r} not found")
