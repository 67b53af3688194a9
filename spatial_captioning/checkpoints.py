"""Run-directory files of the original (spec 2.11 / 6): model.pth, optimizer.pth, infos_<id>.pkl, histories_<id>.pkl.

Writes the README/ORT names and reads both those and HEAD's (`model.pt`, `infos.pkl`).
"""
from __future__ import annotations

import argparse
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from common.checkpoint import load_checkpoint_file, load_state_dict_strict
from common.errors import InputError


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


class _TolerantUnpickler(pickle.Unpickler):
    """Unpickles infos written by the original (py2, argparse.Namespace); unknown classes become dict-like."""

    SAFE = {("argparse", "Namespace"), ("collections", "defaultdict"), ("collections", "OrderedDict"),
            ("builtins", "set"), ("builtins", "frozenset"), ("__builtin__", "set"), ("copy_reg", "_reconstructor"),
            ("builtins", "object"), ("__builtin__", "object"), ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
            ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
            ("copyreg", "_reconstructor"), ("torch._utils", "_rebuild_tensor_v2"), ("torch", "FloatStorage"),
            ("torch", "LongStorage"), ("torch.storage", "_load_from_bytes")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.SAFE:
            if module == "__builtin__":
                module = "builtins"
            if module == "copy_reg":
                module = "copyreg"
            return super().find_class(module, name)
        return type(name, (dict,), {"__setstate__": lambda self, state: self.update(state if isinstance(state, dict)
                                                                                       else {"state": state})})


def load_infos(path: str | Path) -> dict:
    """Read an infos/histories pickle; opt comes back as a plain dict (Namespace accepted, spec 6.2)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = _TolerantUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as err:
        raise InputError(path, f"not a readable infos pickle ({err})") from None
    if not isinstance(data, dict):
        raise InputError(path, f"expected a dict, got {type(data).__name__}")
    if isinstance(data.get("opt"), argparse.Namespace):
        data["opt"] = vars(data["opt"])
    if "vocab" in data and isinstance(data["vocab"], dict):
        data["vocab"] = {str(k): v for k, v in data["vocab"].items()}
    return data


def save_pickle(obj: Any, path: str | Path) -> Path:
    """Atomically pickle obj to path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_model_weights(model: torch.nn.Module, path: str | Path, trust: bool = False) -> None:
    """Load a model.pth/.pt state_dict (original or ours) through convert.py, strictly."""
    from spatial_captioning.convert import convert_state_dict

    obj = load_checkpoint_file(path, trust=trust)
    sd = convert_state_dict(obj)
    load_state_dict_strict(model, sd, strict=True, source=path)
