"""One PNG per evaluated image: the image (or a blank canvas), its regions, the grid, generated vs reference captions."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np


def render_caption_png(out_path: str | Path, boxes: np.ndarray | None, grid: int, generated: str,
                       references: Sequence[str], image_path: str | Path | None = None,
                       size: tuple[float, float] | None = None, title: str = "",
                       highlight: int | None = None) -> Path:
    """Draw and save the PNG; `boxes` are absolute [x1, y1, x2, y2] in image pixels (or relative if size is None)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    img = None
    if image_path is not None and Path(image_path).is_file():
        from PIL import Image

        img = np.asarray(Image.open(image_path).convert("RGB"))
        size = (img.shape[1], img.shape[0])
    W, H = size if size else (1.0, 1.0)
    fig, ax = plt.subplots(figsize=(5, 5.6))
    if img is not None:
        ax.imshow(img)
    else:
        ax.add_patch(Rectangle((0, 0), W, H, color="#eeeeee"))
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    for k in range(1, grid):
        ax.axvline(W * k / grid, color="white" if img is not None else "#999999", lw=0.5, alpha=0.7)
        ax.axhline(H * k / grid, color="white" if img is not None else "#999999", lw=0.5, alpha=0.7)
    if boxes is not None:
        for j, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, dtype=float)):
            strong = highlight is not None and j == highlight
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=2.0 if strong else 0.8,
                                   edgecolor="#d62728" if strong else "#1f77b4"))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    text = "generated: " + generated + "\n" + "\n".join("ref: " + r for r in list(references)[:3])
    fig.text(0.02, 0.02, "\n".join(textwrap.fill(line, 70) for line in text.splitlines()), fontsize=8,
             va="bottom", family="monospace")
    fig.subplots_adjust(bottom=0.22, top=0.93)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=80)
    plt.close(fig)
    return out_path
