"""Run-directory files of the original (spec 2.11 / 6): model.pth, optimizer.pth, infos_<id>.pkl, histories_<id>.pkl.

Writes the README/ORT names and reads both those and HEAD's (`model.pt`, `infos.pkl`).
"""
from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any, Mapping

import torch

from common.checkpoint import atomic_write_bytes, load_checkpoint_file, load_state_dict_strict
from common.errors import InputError
from common.safe_pickle import load_pickle, torch_load


def infos_name(run_id: str, best: bool = False) -> str:
    """infos_<id>.pkl / infos_<id>-best.pkl (infos.pkl when the id is empty)."""
    stem = f"infos_{run_id}" if run_id else "infos"
    return f"{stem}-best.pkl" if best else f"{stem}.pkl"


def find_infos(directory: str | Path, run_id: str = "", best: bool = False) -> Path:
    """The infos pickle of a run directory: infos_<id>.pkl, any infos_*.pkl, or HEAD's infos.pkl."""
    d = Path(directory)
    candidates = [d / infos_name(run_id, best)]
    if not best:
        candidates += sorted(p for p in d.glob("infos_*.pkl") if not p.name.endswith("-best.pkl"))
    candidates += [d / ("infos-best.pkl" if best else "infos.pkl")]
    for path in candidates:
        if path.is_file():
            return path
    raise InputError(d, f"no infos pickle found (looked for {', '.join(p.name for p in candidates)})")


def find_model_file(directory: str | Path, names: tuple[str, ...] = ("model.pth", "model.pt"),
                    required: bool = True) -> Path | None:
    """First existing file of `names` in directory (README name first, then HEAD's)."""
    for name in names:
        path = Path(directory) / name
        if path.is_file():
            return path
    if required:
        raise InputError(directory, f"none of {', '.join(names)} found")
    return None


def load_infos(path: str | Path, trust: bool = False) -> dict:
    """Read an infos/histories pickle with the restricted unpickler; opt comes back as a plain dict in this
    implementation's option names (argparse.Namespace and ORT's names accepted, spec 6.2)."""
    from spatial_captioning.opts import native_options

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "infos pickle not found")
    data = load_pickle(path, trust=trust)
    if not isinstance(data, dict):
        raise InputError(path, f"expected a dict, got {type(data).__name__}")
    if "opt" in data:
        opt = data["opt"]
        if isinstance(opt, argparse.Namespace):
            opt = vars(opt)
        if not isinstance(opt, dict):
            raise InputError(path, f"'opt' is a {type(opt).__name__}, not a Namespace or dict", field="opt")
        data["opt"] = native_options(opt, path)
    if "vocab" in data:
        if not isinstance(data["vocab"], dict) or not data["vocab"]:
            raise InputError(path, "'vocab' must be a non-empty ix_to_word dict", field="vocab")
        data["vocab"] = {str(k): v for k, v in data["vocab"].items()}
    return data


def save_pickle(obj: Any, path: str | Path) -> Path:
    """Atomically pickle obj to path (the user's umask applies)."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return atomic_write_bytes(path, data)


def load_optimizer_state(path: str | Path, trust: bool = False) -> dict:
    """An optimizer.pth state dict, read through common.safe_pickle."""
    state = torch_load(path, trust=trust)
    if not isinstance(state, dict):
        raise InputError(path, f"expected an optimizer state dict, got {type(state).__name__}")
    return state


def load_model_weights(model: torch.nn.Module, path: str | Path, trust: bool = False) -> None:
    """Load a model.pth/.pt state_dict (original or ours) through convert.py, strictly."""
    from spatial_captioning.convert import convert_state_dict

    obj = load_checkpoint_file(path, trust=trust)
    if not isinstance(obj, Mapping):
        raise InputError(path, f"holds a {type(obj).__name__}, not a state dict")
    try:
        sd = convert_state_dict(obj)
    except ValueError as err:
        raise InputError(path, str(err)) from None
    for key, value in sd.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise InputError(path, "weights contain NaN or inf", field=key)
    load_state_dict_strict(model, sd, strict=True, source=path)
