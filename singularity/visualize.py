"""Retrieval PNG: text queries with their top-5 retrieved clips (a few frames each), the correct one marked."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from singularity.data.frames import read_frames


def plot_text_to_video(path: str | Path, texts: list[str], videos: list[str], t2i: np.ndarray, txt2img: dict,
                       queries: list[int] | None = None, top: int = 5, frames: int = 3) -> Path:
    """Write a grid: one row per text query, its ``top`` clips by score; green frame = ground truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    queries = list(range(min(4, len(texts)))) if queries is None else queries
    fig, axes = plt.subplots(len(queries), top, figsize=(2.6 * top, 1.5 * len(queries) + 0.6), squeeze=False)
    for row, q in enumerate(queries):
        order = np.argsort(t2i[q])[::-1][:top]
        gt = txt2img[q] if isinstance(txt2img[q], list) else [txt2img[q]]
        for col, vid in enumerate(order):
            clip, _ = read_frames(videos[vid], frames, "middle", reader="av")
            strip = np.concatenate([f.permute(1, 2, 0).numpy() for f in clip], axis=1)
            ax = axes[row][col]
            ax.imshow(strip, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            hit = int(vid) in gt
            ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, lw=4,
                                   edgecolor="limegreen" if hit else "crimson"))
            ax.set_title(f"#{col + 1} {Path(videos[vid]).stem[:18]}\nscore {t2i[q][vid]:.2f}" + ("  (GT)" if hit else ""),
                         fontsize=7)
        axes[row][0].set_ylabel(f'"{texts[q]}"', fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle("Text-to-video retrieval: top-5 clips per query (green = ground truth)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
