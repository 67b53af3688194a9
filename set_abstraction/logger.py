"""Meters and the original's log files (spec 2.5): <name>.txt, <name>_val.txt, _eval.txt, _summary.txt."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

METER_ORDER = ["Time", "Data", "abstr", "embed", "full", "top1@abstr", "top5@abstr"] + [
    f"top{k}@abstr_{s}" for s in range(1, 5) for k in (1, 5)]
FORMATS = {"Time": ":.3f", "Data": ":.3f", "abstr": ":.4f", "embed": ":.4f", "full": ":.4f"}


class AverageMeter:
    """Current value and running (count-weighted) average; str gives ``name val (avg)``."""

    def __init__(self, name: str, fmt: str = ":.3f"):
        self.name = name
        self.fmt = fmt
        self.reset()

    def reset(self) -> None:
        self.val = 0.0
        self.avg = 0.0
        self.sum = 0.0
        self.count = 0

    def update(self, val: float, n: int = 1) -> None:
        self.val = float(val)
        self.sum += float(val) * n
        self.count += n
        self.avg = self.sum / self.count

    def __str__(self) -> str:
        return ("{name} {val" + self.fmt + "} ({avg" + self.fmt + "})").format(name=self.name, val=self.val,
                                                                              avg=self.avg)


class ProgressMeter:
    """Meters by name (created on first use) and the ``Epoch: [e][ i/N]`` progress line."""

    def __init__(self, num_batches: int, prefix: str = ""):
        width = len(str(num_batches))
        self.batch_fmt = "[{:" + str(width) + "d}/" + str(num_batches) + "]"
        self.prefix = prefix
        self.meters: dict[str, AverageMeter] = {}

    def __getitem__(self, name: str) -> AverageMeter:
        if name not in self.meters:
            self.meters[name] = AverageMeter(name, FORMATS.get(name, ":.3f"))
        return self.meters[name]

    def ordered(self) -> list[AverageMeter]:
        """Meters in the original column order, unknown ones last."""
        known = [self.meters[n] for n in METER_ORDER if n in self.meters]
        return known + [m for n, m in self.meters.items() if n not in METER_ORDER]

    def display(self, batch: int) -> str:
        """Tab-separated progress line."""
        return "\t".join([self.prefix + self.batch_fmt.format(batch)] + [str(m) for m in self.ordered()])

    def averages(self) -> dict[str, float]:
        """{meter name: average}."""
        return {n: m.avg for n, m in self.meters.items()}


class AbstractionLogger:
    """Writes the main/val/eval/summary text logs and a JSON-lines metrics log, rank 0 only."""

    STREAMS = {"main": "{name}.txt", "val": "{name}_val.txt", "eval": "{name}_eval.txt",
               "summary": "{name}_summary.txt", "metrics": "{name}_metrics.jsonl"}

    def __init__(self, log_dir: str | Path, name: str, append: bool = False, enabled: bool = True):
        self.log_dir = Path(log_dir)
        self.name = name
        self.append = append
        self.enabled = enabled
        self._files: dict[str, TextIO] = {}
        if enabled:
            self.log_dir.mkdir(parents=True, exist_ok=True)

    def path(self, stream: str) -> Path:
        """File of a stream."""
        return self.log_dir / self.STREAMS[stream].format(name=self.name)

    def _file(self, stream: str) -> TextIO:
        if stream not in self._files:
            mode = "a" if self.append and stream in ("main", "val", "metrics") else "w"
            self._files[stream] = open(self.path(stream), mode)
        return self._files[stream]

    def write(self, msg: str, stream: str = "main") -> None:
        """Append a line to a stream (no-op off rank 0)."""
        if not self.enabled:
            return
        handle = self._file(stream)
        handle.write(msg + "\n")
        handle.flush()

    def log_metrics(self, record: dict) -> None:
        """One JSON line in <name>_metrics.jsonl (per logged step and per epoch)."""
        self.write(json.dumps(record, sort_keys=True), "metrics")

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()
