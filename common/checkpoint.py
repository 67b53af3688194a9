"""Checkpoint IO: atomic full-state saves, resume from latest, best-k retention, legacy loading, key mapping.

A checkpoint is a directory ``<dir>/step_<NNNNNNNN>/`` holding

* ``model.safetensors``  the weights (tied tensors stored once, see ``safetensors.torch.save_model``),
* ``training_state.pt``  optimizer / scheduler / grad-scaler states, RNG states, step, epoch, extra,
                         readable with ``torch.load(weights_only=True)``,
* ``meta.json``          step, epoch, metrics and config, for people and for picking the best.

Each directory is written under a temporary name, fsynced and renamed, so a crash mid-save never
leaves a truncated checkpoint under the real name; ``<dir>/latest`` names the newest one.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import load_model as load_safetensors_model
from safetensors.torch import save_model as save_safetensors_model

from common.safe_pickle import CheckpointError, torch_load

WEIGHTS_NAME = "model.safetensors"
STATE_NAME = "training_state.pt"
META_NAME = "meta.json"
LATEST_NAME = "latest"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------

def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def chmod_default(path: Path, directory: bool = False) -> None:
    """Give a mkstemp/mkdtemp-made path the mode a plain open()/mkdir() would have (umask applied)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write a file through ``write(fileobj)`` to a temp name in the same directory, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        chmod_default(Path(tmp))
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """torch.save ``obj`` to ``path`` atomically; returns the path."""
    return _atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    return _atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    return _atomic_write(path, lambda handle: handle.write(text), mode="w")


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically; returns the path."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------------------------
# RNG state
# --------------------------------------------------------------------------------------------

def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states, in a weights_only-loadable form."""
    version, internal, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what ``capture_rng_state`` captured (CUDA only when saved and available)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# --------------------------------------------------------------------------------------------
# Training-state checkpoints
# --------------------------------------------------------------------------------------------

def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


@dataclass
class TrainingState:
    """What a resumed run needs besides the weights."""

    path: Path
    step: int
    epoch: int
    metrics: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _is_main_process() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or \
        torch.distributed.get_rank() == 0


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


class CheckpointManager:
    """Saves full training states under one directory, keeps the last k and the best k by a metric.

    Call ``save`` on every rank: rank 0 writes, the others wait at a barrier.
    """

    def __init__(self, directory: str | Path, keep_last: int = 1, keep_best: int = 1,
                 metric: str | None = None, mode: str = "max"):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if keep_last < 1:
            raise ValueError("keep_last must be >= 1 (resuming needs the latest checkpoint)")
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.keep_best = keep_best if metric is not None else 0
        self.metric = metric
        self.mode = mode

    # -- listing -------------------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Complete checkpoint directories, oldest step first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.glob("step_*") if p.is_dir() and (p / META_NAME).is_file()]
        return sorted(found, key=lambda p: int(p.name.split("_")[1]))

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        pointer = self.directory / LATEST_NAME
        if pointer.is_file():
            candidate = self.directory / pointer.read_text().strip()
            if (candidate / META_NAME).is_file():
                return candidate
        found = self.checkpoints()
        return found[-1] if found else None

    def best(self) -> Path | None:
        """The checkpoint with the best value of ``metric``, or None."""
        ranked = self._ranked_by_metric()
        return ranked[0] if ranked else None

    def _ranked_by_metric(self) -> list[Path]:
        if self.metric is None:
            return []
        scored = []
        for path in self.checkpoints():
            value = read_meta(path).get("metrics", {}).get(self.metric)
            if value is not None:
                scored.append((float(value), int(path.name.split("_")[1]), path))
        sign = -1.0 if self.mode == "max" else 1.0
        scored.sort(key=lambda item: (sign * item[0], item[1]))
        return [path for _, _, path in scored]

    # -- saving --------------------------------------------------------------------------------
    def save(self, *, model: torch.nn.Module, step: int, epoch: int = 0,
             optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None, scaler: Any = None,
             metrics: Mapping[str, float] | None = None, config: Mapping[str, Any] | None = None,
             extra: Mapping[str, Any] | None = None) -> Path:
        """Write a checkpoint atomically and prune old ones; returns its directory."""
        final = self.directory / f"step_{step:08d}"
        if _is_main_process():
            self._write(final, model=model, step=step, epoch=epoch, optimizer=optimizer,
                        scheduler=scheduler, scaler=scaler, metrics=dict(metrics or {}),
                        config=dict(config or {}), extra=dict(extra or {}))
            self._prune()
        _barrier()
        return final

    def _write(self, final: Path, *, model, step, epoch, optimizer, scheduler, scaler, metrics,
               config, extra) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.directory, prefix=f".tmp-{final.name}-"))
        try:
            chmod_default(tmp, directory=True)
            save_safetensors_model(unwrap_model(model), str(tmp / WEIGHTS_NAME))
            chmod_default(tmp / WEIGHTS_NAME)
            state = {
                "format": FORMAT_VERSION,
                "step": int(step),
                "epoch": int(epoch),
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "rng": capture_rng_state(),
                "extra": extra,
            }
            with open(tmp / STATE_NAME, "wb") as handle:
                torch.save(state, handle)
                handle.flush()
                os.fsync(handle.fileno())
            meta = {"format": FORMAT_VERSION, "step": int(step), "epoch": int(epoch),
                    "metrics": {k: float(v) for k, v in metrics.items()}, "config": config}
            with open(tmp / META_NAME, "w") as handle:
                json.dump(meta, handle, indent=2, sort_keys=True, default=str)
                handle.flush()
                os.fsync(handle.fileno())
            with open(tmp / WEIGHTS_NAME, "rb") as handle:
                os.fsync(handle.fileno())
            _fsync_dir(tmp)
            if final.exists():  # re-saving the same step: swap the old one out first
                old = final.with_name(f".old-{final.name}")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old)
            else:
                os.replace(tmp, final)
            _fsync_dir(self.directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        atomic_write_text(self.directory / LATEST_NAME, final.name + "\n")

    def _prune(self) -> None:
        found = self.checkpoints()
        keep = set(found[-self.keep_last:])
        keep.update(self._ranked_by_metric()[: self.keep_best])
        for path in found:
            if path not in keep:
                shutil.rmtree(path)

    # -- loading -------------------------------------------------------------------------------
    def load(self, path: str | Path | None = None, *, model: torch.nn.Module,
             optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None, scaler: Any = None,
             map_location: str | torch.device = "cpu", restore_rng: bool = True) -> TrainingState:
        """Restore model/optimizer/scheduler/scaler/RNG from ``path`` (default: latest)."""
        path = Path(path) if path is not None else self.latest()
        if path is None:
            raise CheckpointError(self.directory, "no checkpoint to resume from")
        return load_training_state(path, model=model, optimizer=optimizer, scheduler=scheduler,
                                   scaler=scaler, map_location=map_location, restore_rng=restore_rng)


def read_meta(path: str | Path) -> dict[str, Any]:
    """The meta.json of a checkpoint directory."""
    meta_path = Path(path) / META_NAME
    try:
        return json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(meta_path, "not a checkpoint directory (meta.json missing)") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(meta_path, f"invalid JSON ({err})") from None


def load_training_state(path: str | Path, *, model: torch.nn.Module,
                        optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                        scaler: Any = None, map_location: str | torch.device = "cpu",
                        restore_rng: bool = True) -> TrainingState:
    """Load a checkpoint directory written by ``CheckpointManager.save`` into the given objects."""
    path = Path(path)
    meta = read_meta(path)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(weights, "weights file missing")
    device = map_location if isinstance(map_location, str) else str(map_location)
    missing, unexpected = load_safetensors_model(unwrap_model(model), str(weights), strict=False,
                                                 device=device)
    if missing or unexpected:
        raise CheckpointError(weights, f"does not fit the model: missing {sorted(missing)[:10]}, "
                                       f"unexpected {sorted(unexpected)[:10]}")
    state = torch_load(path / STATE_NAME, map_location=map_location)
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is None:
            continue
        if state.get(name) is None:
            raise CheckpointError(path / STATE_NAME, f"holds no {name} state to resume", field=name)
        obj.load_state_dict(state[name])
    if restore_rng:
        restore_rng_state(state["rng"])
    return TrainingState(path=path, step=int(state["step"]), epoch=int(state["epoch"]),
                         metrics=meta.get("metrics", {}), config=meta.get("config", {}),
                         extra=state.get("extra") or {})


# --------------------------------------------------------------------------------------------
# Foreign / legacy checkpoint files
# --------------------------------------------------------------------------------------------

_DIR_WEIGHT_NAMES = (WEIGHTS_NAME, "pytorch_model.bin", "model.pth", "model.pt", "model_best.pth.tar")


def load_checkpoint_file(path: str | Path, trust: bool = False, map_location: str = "cpu") -> Any:
    """Read a ``.safetensors`` / ``.pth`` / ``.pth.tar`` / ``.bin`` / ``.pt`` file (or a directory holding one).

    Pickles go through ``common.safe_pickle.torch_load``: weights-only first, then the restricted
    unpickler (argparse Namespaces, numpy scalars and OmegaConf configs become plain data); a file
    that asks for anything else is refused unless ``trust`` is set (scripts: ``--trust_checkpoint``).
    """
    path = Path(path)
    if path.is_dir():
        for name in _DIR_WEIGHT_NAMES:
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise CheckpointError(path, f"directory holds none of {', '.join(_DIR_WEIGHT_NAMES)}")
    if not path.is_file():
        raise CheckpointError(path, "checkpoint file not found")
    if path.suffix == ".safetensors":
        try:
            return load_safetensors(str(path), device=map_location)
        except (SafetensorError, OSError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(path, f"not a readable safetensors file, truncated or corrupt ({first})") from None
    return torch_load(path, trust=trust, map_location=map_location)


def extract_state_dict(obj: Any, keys: Sequence[str] = ("state_dict", "model", "module")) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded checkpoint (unwrapping {'state_dict': ...}-style wrappers)."""
    current = obj
    while isinstance(current, Mapping) and not all(isinstance(v, torch.Tensor) for v in current.values()):
        for key in keys:
            if key in current and isinstance(current[key], Mapping):
                current = current[key]
                break
        else:
            tensors = {k: v for k, v in current.items() if isinstance(v, torch.Tensor)}
            if tensors:
                return dict(tensors)
            raise ValueError(f"no state dict found under any of {list(keys)}; top-level keys: {list(current)[:10]}")
    if not isinstance(current, Mapping):
        raise ValueError(f"checkpoint holds a {type(current).__name__}, not a state dict")
    return dict(current)


def remap_keys(state_dict: Mapping[str, Any], strip_prefix: str | Iterable[str] | None = None,
               add_prefix: str | None = None, rename: Sequence[tuple[str, str]] = (),
               drop: Sequence[str] = ()) -> dict[str, Any]:
    """Rename checkpoint keys: drop regexes, strip prefixes, apply regex renames in order, add a prefix.

    Raises ValueError when two source keys would land on the same name.
    """
    prefixes = [strip_prefix] if isinstance(strip_prefix, str) else list(strip_prefix or [])
    drop_res = [re.compile(p) for p in drop]
    rename_res = [(re.compile(p), r) for p, r in rename]
    out: dict[str, Any] = {}
    source_of: dict[str, str] = {}
    for key, value in state_dict.items():
        if any(r.search(key) for r in drop_res):
            continue
        new = key
        for prefix in prefixes:
            if new.startswith(prefix):
                new = new[len(prefix):]
                break
        for pattern, repl in rename_res:
            new = pattern.sub(repl, new)
        if add_prefix:
            new = add_prefix + new
        if new in out:
            raise ValueError(f"keys {source_of[new]!r} and {key!r} both map to {new!r}")
        out[new] = value
        source_of[new] = key
    return out


@dataclass
class KeyReport:
    """How a state dict fits a model."""

    total: int
    loaded: int
    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        """One line: ``loaded N/M keys`` plus the counts of problems."""
        line = f"loaded {self.loaded}/{self.total} keys"
        if not self.ok:
            line += (f" ({len(self.missing)} missing, {len(self.unexpected)} unexpected, "
                     f"{len(self.mismatched)} shape-mismatched)")
        return line

    def details(self, limit: int = 20) -> str:
        """The problem keys, at most ``limit`` of each kind."""
        parts = []
        for name, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                more = f" ... (+{len(items) - limit})" if len(items) > limit else ""
                parts.append(f"{name}: {', '.join(items[:limit])}{more}")
        if self.mismatched:
            shown = [f"{k} checkpoint{list(a)} vs model{list(b)}" for k, a, b in self.mismatched[:limit]]
            parts.append("shape-mismatched: " + ", ".join(shown))
        return "; ".join(parts)


class CheckpointKeyError(CheckpointError):
    """A state dict with missing, unexpected or wrongly shaped keys for the model."""


def compare_keys(model_shapes: Mapping[str, Sequence[int]], state_dict: Mapping[str, Any]) -> KeyReport:
    """Compare a model's {key: shape} with a state dict's tensors; no loading."""
    missing = [k for k in model_shapes if k not in state_dict]
    unexpected = [k for k in state_dict if k not in model_shapes]
    mismatched = []
    for key, shape in model_shapes.items():
        if key in state_dict:
            got = tuple(state_dict[key].shape)
            if got != tuple(shape):
                mismatched.append((key, got, tuple(shape)))
    loaded = len(model_shapes) - len(missing) - len(mismatched)
    return KeyReport(total=len(model_shapes), loaded=loaded, missing=missing,
                     unexpected=unexpected, mismatched=mismatched)


def load_state_dict_strict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor],
                           strict: bool = True, source: str | Path = "state dict",
                           assign: bool | None = None) -> KeyReport:
    """Load ``state_dict`` into ``model``; raise CheckpointKeyError on any key problem unless strict=False.

    With strict=False the matching keys are loaded and the report says what was not.
    ``assign`` defaults to True when the model lives on the meta device.
    """
    target = unwrap_model(model)
    model_sd = target.state_dict()
    report = compare_keys({k: tuple(v.shape) for k, v in model_sd.items()}, state_dict)
    if strict and not report.ok:
        raise CheckpointKeyError(source, f"{report.summary()}: {report.details()}")
    if assign is None:
        assign = any(t.is_meta for t in model_sd.values())
    bad = {k for k, _, _ in report.mismatched}
    usable = {k: v for k, v in state_dict.items() if k in model_sd and k not in bad}
    target.load_state_dict(usable, strict=False, assign=assign)
    return report
