"""Synthetic "object + position" captioning data in the real formats (spec 10.1).

Each image has one target region (class prototype + noise) placed in one of the 3 x 3 image thirds and 3-7
background regions. Features carry no position information: position words are only predictable through
the grid vectors. Run as `python -m spatial_captioning.synthetic --out DIR`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from common.errors import InputError, run_cli
from common.threads import add_num_threads_flag, apply_num_threads

CLASSES = ("cat", "dog", "car", "bus", "bird", "cup", "tree", "kite")
VERTICAL = ("top", "middle", "bottom")
HORIZONTAL = ("left", "center", "right")
TEMPLATES = ("a {c} at the {v} {h}", "there is a {c} in the {v} {h}", "a {c} on the {v} {h} of the picture",
             "the {c} is at the {v} {h}", "a photo of a {c} at the {v} {h}")
RARE_WORD = "shiny"  # used in 2 captions so that word_count_threshold 5 maps it to UNK
SIZES = ((160, 120), (200, 150), (120, 160))
COLORS = {"cat": (230, 120, 40), "dog": (150, 90, 40), "car": (200, 30, 30), "bus": (240, 200, 20),
          "bird": (40, 160, 230), "cup": (250, 250, 250), "tree": (30, 150, 60), "kite": (200, 60, 200)}


def _target_box(rng: np.random.Generator, vi: int, hi: int) -> np.ndarray:
    w, h = rng.uniform(0.15, 0.3, size=2)
    cx = (hi + 0.5) / 3 + rng.uniform(-0.03, 0.03)
    cy = (vi + 0.5) / 3 + rng.uniform(-0.03, 0.03)
    return np.clip([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 0.0, 1.0)


def _random_box(rng: np.random.Generator) -> np.ndarray:
    x1, y1 = rng.uniform(0, 0.8, size=2)
    w, h = rng.uniform(0.1, 0.4, size=2)
    return np.clip([x1, y1, x1 + w, y1 + h], 0.0, 1.0)


def make_synthetic_coco(root: str | Path, n_train: int = 400, n_restval: int = 0, n_val: int = 50, n_test: int = 50,
                        seed: int = 0, feat_dim: int = 32, num_grids: int = 36, write_images: bool = True,
                        verbose: bool = False) -> dict[str, Path]:
    """Write the raw inputs, then run our prepro_labels/ngrams/areas/bbox scripts; return the important paths."""
    from spatial_captioning import captions, features  # the real preprocessing code builds the derived files

    root = Path(root)
    if (root / "dataset_coco.json").exists():
        raise InputError(root / "dataset_coco.json", "already exists; choose an empty --out directory")
    rng = np.random.default_rng(seed)
    prototypes = {c: rng.normal(0, 1, feat_dim).astype(np.float32) for c in CLASSES}
    background = rng.normal(0, 1, feat_dim).astype(np.float32)
    dirs = {k: root / k for k in ("cocobu_att", "cocobu_fc", "cocobu_box")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    image_dir = root / "images" / "val2014"
    if write_images:
        image_dir.mkdir(parents=True, exist_ok=True)
    splits = ["train"] * n_train + ["restval"] * n_restval + ["val"] * n_val + ["test"] * n_test
    images, sent_id, rare_left = [], 1, 2
    for i, split in enumerate(splits):
        cocoid = i + 1
        c = CLASSES[rng.integers(len(CLASSES))]
        vi, hi = int(rng.integers(3)), int(rng.integers(3))
        v, h = VERTICAL[vi], HORIZONTAL[hi]
        W, H = SIZES[rng.integers(len(SIZES))]
        k = int(rng.integers(4, 9))
        target = int(rng.integers(k))
        rel = np.stack([_target_box(rng, vi, hi) if j == target else _random_box(rng) for j in range(k)])
        feats = np.stack([(prototypes[c] if j == target else background) + rng.normal(0, 0.3, feat_dim)
                          for j in range(k)]).astype(np.float32)
        boxes = (rel * np.array([W, H, W, H])).astype(np.float32)
        np.savez_compressed(dirs["cocobu_att"] / f"{cocoid}.npz", feat=feats)
        np.save(dirs["cocobu_fc"] / f"{cocoid}.npy", feats.mean(0))
        np.save(dirs["cocobu_box"] / f"{cocoid}.npy", boxes)
        sentences = []
        for t, template in enumerate(TEMPLATES):
            raw = template.format(c=c, v=v, h=h)
            if split == "train" and t == 4 and rare_left > 0:
                raw = raw.replace(f"a {c}", f"a {RARE_WORD} {c}", 1)
                rare_left -= 1
            sentences.append({"tokens": raw.split(), "raw": raw.capitalize() + ".", "imgid": i, "sentid": sent_id})
            sent_id += 1
        filename = f"COCO_val2014_{cocoid:012d}.jpg"
        images.append({"filepath": "val2014", "filename": filename, "imgid": i, "cocoid": cocoid, "split": split,
                       "sentids": [s["sentid"] for s in sentences], "sentences": sentences, "width": W, "height": H,
                       "synthetic": {"class": c, "vertical": v, "horizontal": h, "target": target}})
        if write_images:
            _write_image(image_dir / filename, W, H, boxes, target, c)
    paths = {"root": root, "dataset_json": root / "dataset_coco.json"}
    paths["dataset_json"].write_text(json.dumps({"images": images, "dataset": "coco"}))
    paths["ann_file"] = root / "annotations" / "captions_val2014.json"
    captions.write_coco_annotations(str(paths["dataset_json"]), str(paths["ann_file"]), ("val", "test"))
    captions.prepro_labels(str(paths["dataset_json"]), str(root / "cocotalk.json"), str(root / "cocotalk"),
                           max_length=10, word_count_threshold=5, verbose=verbose)
    captions.prepro_ngrams(str(paths["dataset_json"]), str(root / "cocotalk.json"), str(root / "coco-train"),
                           split="train", verbose=verbose)
    features.prepro_areas(str(dirs["cocobu_box"]), str(root / "cocobu_box_vec"), num_grids,
                               input_json=str(root / "cocotalk.json"), verbose=verbose)
    features.prepro_bbox_relative_coords(str(paths["dataset_json"]),
                                              str(root / "images") if write_images else "",
                                              str(dirs["cocobu_box"]), str(root / "cocobu_box_relative"),
                                              verbose=verbose)
    paths.update(input_json=root / "cocotalk.json", input_label_h5=root / "cocotalk_label.h5",
                 input_img_feat_dir=dirs["cocobu_att"], input_fc_feat_dir=dirs["cocobu_fc"],
                 input_box_dir=dirs["cocobu_box"], input_grid_vec_dir=root / "cocobu_box_vec",
                 input_rel_box_dir=root / "cocobu_box_relative", cached_tokens=root / "coco-train-idxs.p",
                 image_root=root / "images")
    return paths


def _write_image(path: Path, W: int, H: int, boxes: np.ndarray, target: int, cls: str) -> None:
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (W, H), (70, 70, 80))
    draw = ImageDraw.Draw(im)
    for j, b in enumerate(boxes):
        if j != target:
            draw.rectangle([float(x) for x in b], outline=(120, 120, 130))
    draw.rectangle([float(x) for x in boxes[target]], fill=COLORS[cls])
    im.save(path, quality=85)


def truth(dataset_json: str | Path) -> dict[int, dict]:
    """cocoid -> {class, vertical, horizontal} recorded by the generator."""
    images = json.loads(Path(dataset_json).read_text())["images"]
    return {img["cocoid"]: img["synthetic"] for img in images if "synthetic" in img}


def word_accuracy(predictions: dict[int, str], dataset_json: str | Path) -> dict[str, float]:
    """Fraction of captions containing the right class / vertical / horizontal word (and only that one)."""
    gt = truth(dataset_json)
    hits = {"class": 0, "vertical": 0, "horizontal": 0}
    vocab = {"class": CLASSES, "vertical": VERTICAL, "horizontal": HORIZONTAL}
    for image_id, caption in predictions.items():
        words = set(caption.split())
        for key in hits:
            found = words & set(vocab[key])
            hits[key] += int(found == {gt[image_id][key]})
    n = max(len(predictions), 1)
    acc = {f"{k}_acc": v / n for k, v in hits.items()}
    acc["position_acc"] = (acc["vertical_acc"] + acc["horizontal_acc"]) / 2
    return acc


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: write the synthetic set under --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory (DATA_DIR layout of the README)")
    parser.add_argument("--n_train", type=int, default=400, help="train images")
    parser.add_argument("--n_restval", type=int, default=0, help="restval images (folded into train)")
    parser.add_argument("--n_val", type=int, default=50, help="val images")
    parser.add_argument("--n_test", type=int, default=50, help="test images")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--num_grids", type=int, default=36, help="G of the grid vectors (perfect square)")
    add_num_threads_flag(parser)
    args = parser.parse_args(argv)
    apply_num_threads(args.num_threads)
    paths = make_synthetic_coco(args.out, args.n_train, args.n_restval, args.n_val, args.n_test, args.seed,
                                num_grids=args.num_grids, verbose=True)
    print(f"synthetic data written to {paths['root']}")


if __name__ == "__main__":
    run_cli(main)
