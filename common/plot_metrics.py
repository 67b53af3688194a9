"""``python -m common.plot_metrics RUN_DIR [RUN_DIR ...]``: loss and validation curves of runs, in one PNG.

Reads each run's ``metrics.jsonl`` (``common.experiment_log``); one panel per metric name, one line
per run and split, x = step.
"""
from __future__ import annotations

import argparse
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from common.errors import run_cli
from common.experiment_log import read_metrics


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path, names: Sequence[str] | None = None,
              max_panels: int = 12) -> Path:
    """Draw the curves of ``run_dirs`` into ``out`` (PNG); returns its path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, dict[tuple[str, str], list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for run_dir in run_dirs:
        label = Path(run_dir).resolve().name
        for record in read_metrics(run_dir):
            if names and record["name"] not in names:
                continue
            series[record["name"]][(label, record["split"])].append((record["step"], record["value"]))
    if not series:
        raise ValueError(f"none of the requested metrics {list(names or [])} is in {list(map(str, run_dirs))}")
    # losses first, then the rest alphabetically
    ordered = sorted(series, key=lambda n: (0 if "loss" in n.lower() else 1, n))[:max_panels]
    cols = min(3, len(ordered))
    rows = math.ceil(len(ordered) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, ordered):
        for (label, split), points in sorted(series[name].items()):
            points.sort()
            xs, ys = zip(*points)
            style = "-" if split == "train" else "o-"
            ax.plot(xs, ys, style, markersize=3, linewidth=1.2,
                    label=f"{label} ({split})" if len(run_dirs) > 1 else split)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(ordered):]:
        ax.axis("off")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.plot_metrics", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", help="run directories holding metrics.jsonl")
    parser.add_argument("--out", default=None,
                        help="PNG to write (default: <first RUN_DIR>/metrics.png; an existing file is refused "
                             "unless --overwrite)")
    parser.add_argument("--names", nargs="*", default=None, help="only these metric names (default: all)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(args.run_dirs[0]) / "metrics.png"
    if out.exists() and not args.overwrite:
        parser.error(f"{out} exists; pass --overwrite or another --out")
    print(plot_runs(args.run_dirs, out, args.names))
    return 0


if __name__ == "__main__":
    run_cli(main)
