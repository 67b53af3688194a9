"""Speed of the plain-PyTorch R101-C4 region extractors (common.regions) at the real input size.

Full-size ResNet-101 widths with random weights (speed does not depend on the values):

  given boxes:  detectron2 Mask R-CNN R101-C4 features of an 800x600 image (resized to 1067x800) and 20 boxes
                plus the whole-image box (VisualCOMET's extractor, spec 2.7)
  detection:    bottom-up-attention Faster R-CNN R101-C4 on an 800x600 image (resized to 800x600): RPN (6000 -> 300
                proposals), RoIPool + res5 on 300 proposals, per-class NMS over 1600 classes, 10-100 regions

Prints seconds per image and images/s for fp32 and bf16 (CPU autocast), on CPU and on CUDA when present, and checks
the issue's bar: an 800x600 image with 20 given boxes in under 5 s on CPU (fp32).

    python benchmarks/regions.py [--repeat 3] [--threads N] [--skip_detection]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable as `python benchmarks/regions.py` from a clone
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common.errors import run_cli  # noqa: E402
from common.regions.detectors import BottomUpC4, BottomUpConfig, Detectron2C4, Detectron2Config  # noqa: E402
from common.regions.image import bottom_up_input, detectron2_input  # noqa: E402
from common.regions.weights import random_state  # noqa: E402

BAR_SECONDS = 5.0


def _autocast(device: str, dtype: str):
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=torch.bfloat16)


def _time(fn, repeat: int, device: str) -> tuple[float, float]:
    """(best wall seconds, CPU seconds of this process in that run): the second is what a busy machine hides."""
    fn()  # warm-up
    best, cpu = float("inf"), float("nan")
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
        if wall < best:
            best, cpu = wall, time.process_time() - start_cpu
    return best, cpu


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print one line per configuration."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3, help="timed runs per configuration (best is reported)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--skip_detection", action="store_true", help="only the given-boxes extractor")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (600, 800, 3), dtype=np.uint8)
    x1 = rng.uniform(0, 700, 20)
    y1 = rng.uniform(0, 500, 20)
    boxes = np.stack([x1, y1, x1 + rng.uniform(20, 100, 20), y1 + rng.uniform(20, 100, 20)], 1)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads on {os.cpu_count()} cores "
          f"(load average {load:.1f}: other processes slow CPU figures down); "
          f"{'CUDA ' + torch.cuda.get_device_name(0) if 'cuda' in devices else 'no CUDA'}")
    d2 = Detectron2C4(Detectron2Config()).eval()
    d2.load_state_dict(random_state(d2.cfg))
    bu = None
    if not args.skip_detection:
        bu = BottomUpC4(BottomUpConfig()).eval()
        bu.load_state_dict(random_state(bu.cfg))
    bar = None
    for device in devices:
        image, sx, sy = detectron2_input(rgb, d2.cfg.pixel_mean)
        all_boxes = np.concatenate([[[0, 0, 800, 600]], boxes]) * np.array([sx, sy, sx, sy])
        image, box_t = image.to(device), torch.from_numpy(all_boxes).float().to(device)
        d2.to(device)
        for dtype in ("fp32", "bf16"):
            def given() -> None:
                with torch.no_grad(), _autocast(device, dtype):
                    d2.region_features(image, box_t)
            sec, cpu = _time(given, args.repeat, device)
            print(f"given boxes  {device:4s} {dtype}: {sec:6.2f} s/image  {1 / sec:6.2f} images/s  "
                  f"({cpu:.2f} CPU-s; 800x600 -> {image.shape[3]}x{image.shape[2]}, 21 boxes)")
            if device == "cpu" and dtype == "fp32":
                bar = (sec, cpu)
        d2.cpu()
        if bu is None:
            continue
        bimage, scale = bottom_up_input(rgb, bu.cfg.pixel_mean)
        bimage = bimage.to(device)
        bu.to(device)
        for dtype in ("fp32", "bf16"):
            def detect() -> None:
                with torch.no_grad(), _autocast(device, dtype):
                    bu.detect(bimage, scale)
            sec, cpu = _time(detect, args.repeat, device)
            print(f"detection    {device:4s} {dtype}: {sec:6.2f} s/image  {1 / sec:6.2f} images/s  "
                  f"({cpu:.2f} CPU-s; 800x600 -> {bimage.shape[3]}x{bimage.shape[2]}, 300 proposals)")
        bu.cpu()
    wall, cpu = bar
    verdict = "meets" if wall < BAR_SECONDS else "MISSES"
    print(f"issue 13 bar: 800x600 image with 20 given boxes on CPU fp32 took {wall:.2f} s ({verdict} < "
          f"{BAR_SECONDS:.0f} s) using {cpu:.2f} CPU-s on {torch.get_num_threads()} thread(s); on an idle machine the "
          f"wall time is about CPU-s / threads")
    return 0


if __name__ == "__main__":
    run_cli(main)
