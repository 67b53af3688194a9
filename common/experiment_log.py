"""One experiment log for every paper: ``metrics.jsonl`` plus optional TensorBoard / wandb scalars.

Each line of ``<run_dir>/metrics.jsonl`` is one scalar::

    {"step": 120, "epoch": 1, "split": "train", "name": "loss", "value": 2.31, "time": 1733467200.5}

``split`` is ``train``, ``val`` or ``test``; ``epoch`` may be null. The same scalars go to
TensorBoard (tensorboardX) and/or wandb when ``--report_to tensorboard,wandb`` asks for them; each
backend is imported only then. A paper keeps its own log lines and TensorBoard tags beside this.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from common.errors import InputError

METRICS_NAME = "metrics.jsonl"
BACKENDS = ("tensorboard", "wandb")
SPLITS = ("train", "val", "test")


def parse_report_to(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"tensorboard,wandb"`` (or a list, or None/"none") -> the backend names, checked."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(dict.fromkeys(item.strip() for item in items if item.strip() and item.strip() != "none"))
    unknown = [name for name in names if name not in BACKENDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown --report_to backend(s) {unknown}; choose from {list(BACKENDS)}")
    return names


def add_report_to_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--report_to`` (comma-separated: tensorboard, wandb; default none); returns the parser."""
    parser.add_argument("--report_to", type=parse_report_to, default=(),
                        help="also send the scalars of metrics.jsonl to these backends, comma-separated: "
                             "tensorboard (tensorboardX event files in the run directory), wandb "
                             "(needs `pip install wandb` and a login). Default: none")
    return parser


class ExperimentLog:
    """Appends scalars to ``metrics.jsonl`` and mirrors them to the chosen backends (rank 0 only)."""

    def __init__(self, run_dir: str | Path, report_to: Iterable[str] = (), config: Mapping[str, Any] | None = None,
                 enabled: bool = True, project: str = "vlpapers", run_name: str | None = None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_NAME
        self.enabled = enabled
        self.report_to = parse_report_to(tuple(report_to))
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if "tensorboard" in self.report_to:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(logdir=str(self.run_dir / "tensorboard"))
        if "wandb" in self.report_to:
            import wandb
            self._wandb = wandb.init(project=project, name=run_name or self.run_dir.name, dir=str(self.run_dir),
                                     config=dict(config or {}))

    def log(self, values: Mapping[str, float], *, step: int, epoch: int | None = None, split: str = "train") -> None:
        """Record each ``name: value`` at ``step``; a non-finite value is an error naming it."""
        if not self.enabled:
            return
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        now = time.time()
        lines = []
        for name, value in values.items():
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"{split} metric {name!r} at step {step} is {value}: refusing to log it")
            lines.append(json.dumps({"step": int(step), "epoch": None if epoch is None else int(epoch),
                                     "split": split, "name": str(name), "value": value, "time": round(now, 3)}))
            tag = name if split == "train" else f"{split}/{name}"
            if self._tb is not None:
                self._tb.add_scalar(tag, value, int(step))
        if self._wandb is not None:
            self._wandb.log({(k if split == "train" else f"{split}/{k}"): float(v) for k, v in values.items()},
                            step=int(step))
        with open(self.path, "a") as handle:
            handle.write("\n".join(lines) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def close(self) -> None:
        """Flush and close the backends."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> "ExperimentLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_FIELDS = {"step": int, "split": str, "name": str, "value": (int, float), "time": (int, float)}


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (or of ``<dir>/metrics.jsonl``), checked line by line."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_NAME
    if not path.is_file():
        raise InputError(path, "metrics log not found (runs write it as metrics.jsonl in their run directory)")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(path, f"invalid JSON ({err.msg} at column {err.colno})", record=f"line {number}") from None
        for field, kind in _FIELDS.items():
            if not isinstance(record.get(field), kind):
                raise InputError(path, f"missing or not {kind}", record=f"line {number}", field=field)
        records.append(record)
    if not records:
        raise InputError(path, "holds no metrics")
    return records
