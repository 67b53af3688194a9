"""Publishable checkpoints: ``config.json`` + ``model.safetensors`` + a ``README.md`` model card.

The layout open_clip and timm publish, read back without any pickle. Each paper's model class
implements ``save_pretrained(dir, ...)`` / ``from_pretrained(dir)`` with these functions and its own
config (a dict of plain JSON values that rebuilds the model).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_model

from common.checkpoint import (CheckpointError, atomic_write_json, atomic_write_text, chmod_default,
                               load_state_dict_strict)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
LAYOUT_VERSION = 1


def _card(paper: str, architecture: str, config: Mapping[str, Any], card: Mapping[str, Any]) -> str:
    metrics = card.get("metrics") or {}
    lines = [
        "---",
        "library_name: vlpapers",
        f"tags: [{paper}, vision-language]",
        "---",
        f"# {card.get('title', f'{paper}: {architecture}')}",
        "",
        f"**Paper:** {card.get('paper', paper)}",
        f"**Task:** {card.get('task', 'see the paper')}",
        f"**Training data:** {card.get('training_data', 'not recorded')}",
        "",
        "## Metrics",
        "",
    ]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value:.4g} |" if isinstance(value, (int, float)) else f"| {name} | {value} |"
                  for name, value in metrics.items()]
        if card.get("metrics_source"):
            lines += ["", f"From `{card['metrics_source']}`."]
    else:
        lines.append("No results file was given when this checkpoint was written.")
    lines += [
        "",
        "## How to load",
        "",
        "```python",
        card.get("how_to_load", f"# see the {paper} README"),
        "```",
        "",
        "Files: `config.json` (architecture and settings), `model.safetensors` (weights; loading it runs no",
        "code), this card.",
    ]
    if card.get("notes"):
        lines += ["", "## Notes", "", str(card["notes"])]
    return "\n".join(lines) + "\n"


def save_pretrained(model: torch.nn.Module, directory: str | Path, *, paper: str, architecture: str,
                    config: Mapping[str, Any], card: Mapping[str, Any] | None = None) -> Path:
    """Write config.json (with paper/architecture), model.safetensors and README.md; returns the dir."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    full = {"paper": paper, "architecture": architecture, "layout_version": LAYOUT_VERSION, **dict(config)}
    json.dumps(full)  # a config that is not plain JSON is a bug of the caller: fail before writing
    tmp = directory / f".{WEIGHTS_NAME}.tmp"
    save_model(model, str(tmp))
    chmod_default(tmp)  # safetensors creates files 0600
    tmp.replace(directory / WEIGHTS_NAME)
    atomic_write_json(directory / CONFIG_NAME, full)
    atomic_write_text(directory / CARD_NAME, _card(paper, architecture, config, card or {}))
    return directory


def read_pretrained(directory: str | Path, *, paper: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config, state dict) of a ``save_pretrained`` directory; no pickle is involved."""
    directory = Path(directory)
    config_path, weights = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights):
        if not path.is_file():
            raise CheckpointError(path, "missing: not a save_pretrained directory "
                                        "(convert released files with `python -m <paper>.convert --to_safetensors SRC DST`)")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(config_path, f"invalid JSON ({err.msg}, line {err.lineno})") from None
    if config.get("paper") != paper:
        raise CheckpointError(config_path, f"holds a {config.get('paper')!r} model, not {paper!r}", field="paper")
    try:
        state_dict = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types for truncated/corrupt files
        raise CheckpointError(weights, f"not a readable safetensors file ({str(err).splitlines()[0]})") from None
    return config, state_dict


def load_into(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str | Path) -> torch.nn.Module:
    """Strictly load ``state_dict`` into ``model`` (tied weights stored once are re-tied); returns it."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    # save_model stores a tied tensor once: fill the other names from their twin before the strict check
    filled = dict(state_dict)
    for key in missing:
        twin = next((k for k in own if k in state_dict and own[k].data_ptr() == own[key].data_ptr()), None)
        if twin is not None:
            filled[key] = state_dict[twin]
    load_state_dict_strict(model, filled, source=source)
    return model
