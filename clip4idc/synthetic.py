"""Small learnable datasets in the real on-disk formats (spec 3.6 / 10).

CLEVR-Change style: grey background, one coloured block in one of four quadrants; the "after" image
recolours it, makes it "metal" (a white rim appears around the unchanged block), adds a second block,
removes it or moves it (the five CLEVR-Change change types); the distractor is the before image shifted
by one pixel and slightly brightened, captioned as "no change". Splits are stratified by change type
(balanced val/test). Every change caption starts "the {colour} block", so the change type is named at
the same word position for all five types (with "a {colour} block was added" the tiny demo model never
produced "add"), and each type changes different pixels: colour (the block's own pixels), material
(only pixels around the block; a white centre inside it was often read as "moved"), add (a second block),
drop (block gone), move (block gone here, present elsewhere).
Spot-the-Diff and Image Editing Request sets reuse the renderer.

    python -m clip4idc.synthetic --out DIR [--size 28] [--train 600 --val 60 --test 120] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image

from common.errors import InputError, run_cli
from clip4idc.data.clevr import CHANGE_TYPES, ClevrChange
from clip4idc.data.ier import ier_gt
from clip4idc.data.spot import reformat_dataset, spot_gt

COLORS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (235, 220, 40)}
BACKGROUND = 110
NO_CHANGE = ["nothing changed", "no change was made", "the scene is the same", "there is no difference"]
TEMPLATES = {
    "color": "the {c} block changed to {c2}",
    "material": "the {c} block became metal",
    "add": "the {c2} block was added",
    "drop": "the {c} block disappeared",
    "move": "the {c} block moved",
}
# Words that identify a generated caption's change type (used by the per-type accuracy).
TYPE_WORDS = {"color": "changed to", "material": "metal", "add": "added", "drop": "disappeared", "move": "moved"}


def caption_type(caption: str) -> str:
    """Change type named by a caption ('none' for a no-change sentence, 'unknown' otherwise)."""
    text = caption.lower()
    if any(s in text for s in ("nothing", "no change", "same", "no difference")):
        return "none"
    for kind, word in TYPE_WORDS.items():
        if word in text:
            return kind
    return "unknown"


def _canvas(size: int) -> np.ndarray:
    return np.full((size, size, 3), BACKGROUND, dtype=np.uint8)


def _draw(img: np.ndarray, quadrant: int, color: str, metal: bool = False) -> None:
    size = img.shape[0]
    block = int(round(size * 0.38))
    half = size // 2
    y0 = (quadrant // 2) * half + (half - block) // 2
    x0 = (quadrant % 2) * half + (half - block) // 2
    if metal:  # a one-pixel white rim around the (unchanged) block
        img[max(y0 - 1, 0) : y0 + block + 1, max(x0 - 1, 0) : x0 + block + 1] = 255
    img[y0 : y0 + block, x0 : x0 + block] = COLORS[color]


def make_scene(rng: random.Random, size: int, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(before, after, distractor, change caption) of one scene with change type `kind`."""
    colors = list(COLORS)
    c, q = rng.choice(colors), rng.randrange(4)
    bef = _canvas(size)
    _draw(bef, q, c)
    aft = _canvas(size)
    c2 = rng.choice([x for x in colors if x != c])
    if kind == "color":
        _draw(aft, q, c2)
    elif kind == "material":
        _draw(aft, q, c, metal=True)
    elif kind == "add":
        _draw(aft, q, c)
        c2 = rng.choice(colors)
        _draw(aft, rng.choice([x for x in range(4) if x != q]), c2)
    elif kind == "move":
        _draw(aft, rng.choice([x for x in range(4) if x != q]), c)
    elif kind != "drop":
        raise ValueError(kind)
    shift = rng.choice([(0, 1), (1, 0), (0, -1), (-1, 0)])
    nsc = np.roll(bef, shift, axis=(0, 1)).astype(np.float32) * rng.uniform(1.03, 1.08)
    return bef, aft, np.clip(nsc, 0, 255).astype(np.uint8), TEMPLATES[kind].format(c=c, c2=c2)


def _save(arr: np.ndarray, path: Path) -> None:
    Image.fromarray(arr).save(path)


def write_clevr(out: Path, n_train: int, n_val: int, n_test: int, size: int, seed: int) -> Path:
    """CLEVR-Change layout under `out` (+ gt/clevr_total_change_captions_reformat.json beside it)."""
    rng = random.Random(seed)
    for sub in ("images", "sc_images", "nsc_images"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    total = n_train + n_val + n_test
    change, no_change, types = {}, {}, {t: [] for t in CHANGE_TYPES}
    for i in range(total):
        sid = f"{i:06d}"
        kind = CHANGE_TYPES[i % len(CHANGE_TYPES)]
        bef, aft, nsc, cap = make_scene(rng, size, kind)
        _save(bef, out / "images" / f"CLEVR_default_{sid}.png")
        _save(aft, out / "sc_images" / f"CLEVR_semantic_{sid}.png")
        _save(nsc, out / "nsc_images" / f"CLEVR_nonsemantic_{sid}.png")
        change[f"CLEVR_default_{sid}.png"] = [cap]
        no_change[f"CLEVR_default_{sid}.png"] = rng.sample(NO_CHANGE, 2)
        types[kind].append(f"{sid}.png")
    # Stratified splits: scenes of each type in random order, interleaved type by type, so that test
    # and val hold every change type equally often (+-1) and the majority-type baseline stays at ~1/5.
    by_type = [list(range(k, total, len(CHANGE_TYPES))) for k in range(len(CHANGE_TYPES))]
    for ids_k in by_type:
        rng.shuffle(ids_k)
    ids = [ids_k[j] for j in range(max(map(len, by_type))) for ids_k in by_type if j < len(ids_k)]
    splits = {"train": sorted(ids[n_test + n_val:]), "val": sorted(ids[n_test:n_test + n_val]),
              "test": sorted(ids[:n_test])}
    for name, obj in (("splits", splits), ("change_captions", change), ("no_change_captions", no_change),
                      ("type_mapping", types)):
        (out / f"{name}.json").write_text(json.dumps(obj))
    return out


def write_spot(out: Path, n_pairs: int, size: int, seed: int) -> Path:
    """Spot-the-Diff layout: images/{id}.png, {id}_2.png, raw {split}.json (with a repeated img_id), reformat files."""
    rng = random.Random(seed + 1)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n_pairs):
        bef, aft, _, cap = make_scene(rng, size, CHANGE_TYPES[i % len(CHANGE_TYPES)])
        _save(bef, out / "images" / f"{i}.png")
        _save(aft, out / "images" / f"{i}_2.png")
        records.append({"img_id": str(i), "sentences": [cap]})
    n_test = max(n_pairs // 5, 2)
    n_val = max(n_pairs // 10, 1)
    splits = {"train": records[: n_pairs - n_test - n_val], "val": records[n_pairs - n_test - n_val : n_pairs - n_test],
              "test": records[n_pairs - n_test :]}
    for split, recs in splits.items():
        recs = list(recs)
        if recs:  # a second annotator's entry for the first pair, as in the real files
            recs.append({"img_id": recs[0]["img_id"], "sentences": ["there is a change", ""]})
        (out / f"{split}.json").write_text(json.dumps(recs))
    reformat_dataset(out, overwrite=True)
    return out


def write_ier(out: Path, n_pairs: int, size: int, seed: int) -> Path:
    """Image Editing Request layout: images/*.png and {train,valid,test}.json with img0/img1/sents/uid."""
    rng = random.Random(seed + 2)
    (out / "images").mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(n_pairs):
        kind = CHANGE_TYPES[i % len(CHANGE_TYPES)]
        bef, aft, _, cap = make_scene(rng, size, kind)
        _save(bef, out / "images" / f"{i}_0.png")
        _save(aft, out / "images" / f"{i}_1.png")
        request = cap.replace("the ", "make the ", 1) if kind != "add" else f"add a {cap.split()[1]} block"
        recs.append({"img0": f"{i}_0.png", "img1": f"{i}_1.png", "sents": [request], "uid": i})
    n_test = max(n_pairs // 5, 2)
    parts = {"train": recs[: n_pairs - 2 * n_test], "valid": recs[n_pairs - 2 * n_test : n_pairs - n_test],
             "test": recs[n_pairs - n_test :]}
    for split, items in parts.items():
        if split != "train":
            items = [dict(r, sents=r["sents"] * 3) for r in items]
        (out / f"{split}.json").write_text(json.dumps(items))
    return out


# Bumped whenever the generated data changes, so the demo regenerates stale copies (see demo.py).
GENERATOR_VERSION = "3"
VERSION_FILE = "GENERATOR_VERSION"


def write_all(out: str | Path, n_train: int = 600, n_val: int = 60, n_test: int = 120, size: int = 28,
              seed: int = 0, spot_pairs: int = 40, ier_pairs: int = 30) -> Path:
    """Write clevr/, spot/, ier/ and gt/ under `out`; returns `out`."""
    out = Path(out)
    if (out / "clevr" / "splits.json").exists():
        raise InputError(out, "already holds a synthetic dataset; choose a new --out")
    write_clevr(out / "clevr", n_train, n_val, n_test, size, seed)
    write_spot(out / "spot", spot_pairs, size, seed)
    write_ier(out / "ier", ier_pairs, size, seed)
    gt = out / "gt"
    gt.mkdir(parents=True, exist_ok=True)
    (gt / "clevr_total_change_captions_reformat.json").write_text(json.dumps(ClevrChange(out / "clevr").gt()))
    (gt / "spot_total_change_captions_reformat.json").write_text(json.dumps(spot_gt(out / "spot" / "test.json")))
    (gt / "ier_total_change_captions_reformat.json").write_text(json.dumps(ier_gt(out / "ier" / "test.json")))
    (out / VERSION_FILE).write_text(GENERATOR_VERSION + "\n")
    return out


def main(argv=None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory (clevr/, spot/, ier/, gt/ are created in it)")
    p.add_argument("--train", type=int, default=600, help="CLEVR-style training scenes")
    p.add_argument("--val", type=int, default=60, help="CLEVR-style validation scenes")
    p.add_argument("--test", type=int, default=120, help="CLEVR-style test scenes")
    p.add_argument("--size", type=int, default=28, help="image side in pixels (the tiny config uses 28)")
    p.add_argument("--spot_pairs", type=int, default=40, help="Spot-the-Diff style pairs")
    p.add_argument("--ier_pairs", type=int, default=30, help="Image Editing Request style pairs")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    a = p.parse_args(argv)
    out = write_all(a.out, a.train, a.val, a.test, a.size, a.seed, a.spot_pairs, a.ier_pairs)
    print(f"wrote synthetic CLEVR-Change / Spot-the-Diff / IER data to {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
