"""Side-by-side PNGs: before | after with generated and reference captions, and where given the
joint-attention map of the CLS token over both images (the original's visualize.py never saved)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from clip4idc.data.images import denormalise  # noqa: E402


def _printable(text: str) -> str:
    """ASCII-only text for the figure (an untrained model decodes arbitrary byte tokens the font lacks)."""
    return text.encode("ascii", "replace").decode("ascii")


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
    fig.text(0.5, 0.04, _printable("\n".join(lines)), ha="center", va="bottom", fontsize=8, wrap=True)
    if title:
        fig.suptitle(_printable(title), fontsize=9)
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
        ax.set_title(_printable(text), fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    """`python visualize.py`: attention + captions of test items (the original hard-coded its paths and
    never saved the figure)."""
    import argparse

    import torch

    from common.errors import InputError
    from common.safe_pickle import add_trust_flag
    from common.threads import add_num_threads_flag, apply_num_threads
    from clip4idc.data import build_dataset
    from clip4idc.decoding import decode_captions
    from clip4idc.factory import model_from_checkpoint
    from clip4idc.tokenizer import get_tokenizer

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--init_model", required=True,
                   help="caption-stage checkpoint (original or this layout), or a save_pretrained directory")
    p.add_argument("--data_path", required=True, help="dataset root (as for main_task_caption.py)")
    p.add_argument("--features_path", default="", help="Spot/IER image directory")
    p.add_argument("--datatype", default="clevr", choices=["clevr", "spot", "ier"], help="dataset kind")
    p.add_argument("--subset", default="test", help="split to draw items from")
    p.add_argument("--index", type=int, nargs="+", default=[0], help="item indices (the original used item 0)")
    p.add_argument("--max_words", type=int, default=None, help="decoding length (default: checkpoint config)")
    p.add_argument("--output_dir", default="vis", help="where the PNGs go")
    add_num_threads_flag(p)
    add_trust_flag(p)
    a = p.parse_args(argv)
    if a.num_threads is not None and a.num_threads < 1:
        raise InputError("--num_threads", f"must be >= 1, got {a.num_threads}")
    apply_num_threads(a.num_threads)
    model, max_words = model_from_checkpoint(a.init_model, trust=a.trust_checkpoint)
    tokenizer = get_tokenizer()
    ds = build_dataset(a.datatype, "caption", a.subset, a.data_path, a.features_path, tokenizer,
                       a.max_words or max_words, model.clip.cfg.image_resolution)
    for index in a.index:
        item = ds[index]
        bef, aft = torch.from_numpy(item[3]), torch.from_numpy(item[4])
        with torch.no_grad():
            _, _, attn = model.encode_pair(bef, aft, return_attention=True)
        cap = decode_captions(model, tokenizer, bef, aft, a.max_words or max_words)[0]
        reference = tokenizer.decode([t for t in item[-2][0].tolist() if t not in (0, 49407)]).strip()
        path = save_pair_png(Path(a.output_dir) / f"{a.subset}_{index}.png", item[3][0], item[4][0], cap, [reference],
                             attn[0].numpy(), model.clip.cfg.grid, title=str(item[-1]))
        print(f"{path}: {cap}")
    return 0


if __name__ == "__main__":
    from common.errors import run_cli

    run_cli(main)
