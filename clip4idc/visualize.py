"""Side-by-side PNGs: before | after with generated and reference captions, and where given the
joint-attention map of the CLS token over both images (the original's visualize.py never saved)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from clip4idc.data.images import denormalise  # noqa: E402


def attention_grids(attention: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Split a (2T,) CLS attention row into (grid,grid) maps over the before and after patches."""
    tokens = grid * grid + 1
    return attention[1:tokens].reshape(grid, grid), attention[tokens + 1 : 2 * tokens].reshape(grid, grid)


def save_pair_png(path: str | Path, bef: np.ndarray, aft: np.ndarray, generated: str,
                  references: list[str] | None = None, attention: np.ndarray | None = None,
                  grid: int | None = None, title: str | None = None) -> Path:
    """Write one PNG; `bef`/`aft` are normalised (3,H,W) arrays; attention is the (2T,) CLS row."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    show_attn = attention is not None and grid is not None
    fig, axes = plt.subplots(1, 2, figsize=(5.6, 3.4), dpi=110)
    maps = attention_grids(np.asarray(attention, dtype=np.float64), grid) if show_attn else (None, None)
    # one colour scale for both images, so the map shows where the CLS token looks across the pair
    vmin, vmax = (min(m.min() for m in maps), max(m.max() for m in maps)) if show_attn else (None, None)
    for ax, img, name, amap in zip(axes, (bef, aft), ("before", "after"), maps):
        shown = denormalise(np.asarray(img))
        ax.imshow(shown, interpolation="nearest")
        if amap is not None:
            ax.imshow(amap, cmap="jet", alpha=0.35, extent=(-0.5, shown.shape[1] - 0.5, shown.shape[0] - 0.5, -0.5),
                      interpolation="bilinear", vmin=vmin, vmax=vmax)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    lines = [f"generated: {generated or '(empty)'}"]
    if show_attn:
        lines.append("overlay: last-layer attention of the before-CLS token over both images")
    if references:
        lines.append("reference: " + " | ".join(references[:3]))
    fig.text(0.5, 0.04, "\n".join(lines), ha="center", va="bottom", fontsize=8, wrap=True)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(bottom=0.25, top=0.85, wspace=0.05)
    fig.savefig(path)
    plt.close(fig)
    return path


def save_grid_png(path: str | Path, items: list[dict], columns: int = 4) -> Path:
    """A contact sheet of several pairs: each item has bef, aft, generated, reference (optional)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = max(1, (len(items) + columns - 1) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.3 * rows), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, item in zip(axes.flat, items):
        bef, aft = denormalise(np.asarray(item["bef"])), denormalise(np.asarray(item["aft"]))
        sep = np.full((bef.shape[0], 2, 3), 255, dtype=np.uint8)
        ax.imshow(np.concatenate([bef, sep, aft], axis=1), interpolation="nearest")
        text = f"gen: {item['generated'] or '(empty)'}"
        if item.get("reference"):
            text += f"\nref: {item['reference']}"
        ax.set_title(text, fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
