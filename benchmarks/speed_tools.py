"""Tools the per-paper benchmarks share: peak memory of a block, and a device sync for timing."""
from __future__ import annotations

import os
import threading

import torch


def sync(device: str) -> None:
    """Wait for queued CUDA work so a wall-clock reading covers it (no-op on CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()


class PeakMemory:
    """Peak memory of a block: CUDA max allocated, or sampled RSS above the start on CPU (Linux).

    ``peak`` is in bytes, NaN where RSS cannot be read.
    """

    def __init__(self, device: str, interval: float = 0.005):
        self.device, self.interval, self.peak = device, interval, float("nan")

    @staticmethod
    def _rss() -> float:
        with open("/proc/self/statm") as handle:
            return float(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> "PeakMemory":
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        if not os.path.exists("/proc/self/statm"):
            return self
        self.base = self.high = self._rss()
        self.stop = threading.Event()

        def sample() -> None:
            while not self.stop.wait(self.interval):
                self.high = max(self.high, self._rss())

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = float(torch.cuda.max_memory_allocated() - self.base)
        elif hasattr(self, "thread"):
            self.stop.set()
            self.thread.join()
            self.peak = max(self.high, self._rss()) - self.base
