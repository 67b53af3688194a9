"""Draw an image's VCR boxes with their person numbers next to the event, place and generated inferences."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from visualcomet import data as vdata

REL_COLORS = {"intent": "#1f77b4", "before": "#2ca02c", "after": "#d62728"}


def draw_example(ax_img, ax_txt, meta: dict[str, Any], image_path: Path | None, items: list[dict[str, Any]],
                 max_gens: int = 3) -> None:
    """One row: the image (or a grey canvas of its size) with numbered boxes; the text panel with inferences."""
    import matplotlib.patches as patches
    import numpy as np

    w, h = meta["width"], meta["height"]
    if image_path is not None and image_path.is_file():
        from PIL import Image

        ax_img.imshow(np.asarray(Image.open(image_path).convert("RGB")))
    else:
        ax_img.imshow(np.full((int(h), int(w), 3), 235, dtype=np.uint8))
    for j, (box, name) in enumerate(zip(meta["boxes"], meta["names"])):
        x1, y1, x2, y2 = box[:4]
        color = "#ff7f0e" if name == "person" else "#7f7f7f"
        ax_img.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=2, edgecolor=color))
        ax_img.text(x1 + 2, y1 + 2, f"{j + 1} {name}", color="white", fontsize=7, va="top",
                    bbox={"facecolor": color, "alpha": 0.85, "pad": 1, "lw": 0})
    ax_img.set_xlim(0, w)
    ax_img.set_ylim(h, 0)
    ax_img.axis("off")
    first = items[0]
    lines = [("Event: " + first["event"], "black"), ("Place: " + first["place"], "black")]
    for it in items:
        for g in it["generations"][:max_gens]:
            lines.append((f"{it['inference_relation']}: {g}", REL_COLORS.get(it["inference_relation"], "black")))
    ax_txt.axis("off")
    y = 1.0
    for text, color in lines:
        printable = "".join(c if c.isprintable() else "\ufffd" for c in text)  # sampled bytes can be control chars
        wrapped = textwrap.fill(printable, 60)
        ax_txt.text(0.0, y, wrapped, color=color, fontsize=9, va="top", transform=ax_txt.transAxes)
        y -= 0.075 * (wrapped.count("\n") + 1)


def visualize(gens: list[dict[str, Any]], images_dir: str | Path, out_png: str | Path, num_images: int = 2,
              max_gens: int = 3) -> Path:
    """PNG with up to ``num_images`` annotations (all three relations each) from a generation JSON list."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[int, list[dict[str, Any]]] = {}
    for g in gens:
        groups.setdefault(g["event_idx"], []).append(g)
    chosen = list(groups.items())[:num_images]
    fig, axes = plt.subplots(len(chosen), 2, figsize=(13, 3.8 * len(chosen)), squeeze=False,
                             gridspec_kw={"width_ratios": [1.1, 1]})
    for row, (_, items) in enumerate(chosen):
        meta = vdata.load_metadata(str(Path(images_dir) / items[0]["metadata_fn"]))
        draw_example(axes[row][0], axes[row][1], meta, Path(images_dir) / items[0]["img_fn"], items, max_gens)
        axes[row][0].set_title(items[0]["img_fn"], fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png
