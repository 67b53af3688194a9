"""Region features of VCR images without detectron2 (spec 2.7, issue 13): <output_dir>/<id>.pkl per image.

For every ``<movie>/<id>.jpg`` with its ``<id>.json`` metadata under --image_dir: the whole-image box [0, 0, w, h]
followed by the metadata boxes, pooled by detectron2's Mask R-CNN R101-C4 (model zoo ``model_final_*.pkl``, read with
the restricted unpickler) after the predictor's resize (shortest edge 800, max 1333, BGR, pixel means), ROIAlignV2
14x14, res5, mean -> ``{'image_features': (2048,), 'object_features': (N, 2048)}`` float32, the training data's format.

Every metadata file is checked before the model is loaded; images already extracted are skipped (resume), each file
is written under a temporary name and renamed, so a half-written file never remains.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InputError, run_cli
from common.regions.extract import DTYPES, check_boxes
from common.safe_pickle import add_trust_flag


def read_vcr_metadata(path: str | Path) -> dict[str, Any]:
    """A VCR metadata JSON with ``boxes`` (N x 4 or 5), ``names`` (N), ``width``, ``height``, checked."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "metadata file not found", field="metadata")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise InputError(path, "expected a JSON object")
    for field in ("boxes", "names", "width", "height"):
        if field not in meta:
            raise InputError(path, "missing", field=field)
    for field in ("width", "height"):
        if not isinstance(meta[field], (int, float)) or isinstance(meta[field], bool) or meta[field] <= 0:
            raise InputError(path, f"must be a positive number, got {meta[field]!r}", field=field)
    if not isinstance(meta["names"], list) or not all(isinstance(n, str) for n in meta["names"]):
        raise InputError(path, "must be a list of class names", field="names")
    if not isinstance(meta["boxes"], list) or len(meta["boxes"]) != len(meta["names"]):
        n = len(meta["boxes"]) if isinstance(meta["boxes"], list) else "no list of"
        raise InputError(path, f"{n} boxes but {len(meta['names'])} names", field="boxes")
    meta["boxes"] = check_boxes(meta["boxes"], meta["width"], meta["height"], path).tolist()
    return meta


def image_jobs(image_dir: str | Path) -> list[tuple[Path, Path, str]]:
    """(image, metadata, id) for every ``<movie>/<id>.jpg`` under image_dir, metadata checked; ids must be unique."""
    root = Path(image_dir)
    if not root.is_dir():
        raise InputError(root, "image directory not found", field="image_dir")
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file())
    if not images:
        raise InputError(root, "no .jpg/.png images found (VCR layout: <movie>/<id>.jpg + <id>.json)")
    jobs, seen = [], {}
    for image in images:
        meta = image.with_suffix(".json")
        read_vcr_metadata(meta)
        key = image.stem
        if key in seen:
            raise InputError(image, f"image id {key!r} also used by {seen[key]} (outputs are <id>.pkl)", field="id")
        seen[key] = image
        jobs.append((image, meta, key))
    return jobs


def write_pickle_atomic(obj: Any, path: Path) -> None:
    """Pickle ``obj`` to a temporary name beside ``path`` (user's umask), then rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "xb") as handle:
            pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def extract_image(model: Any, image: Path, meta_path: Path, dtype: str = "fp32") -> dict[str, np.ndarray]:
    """The feature dict of one image (whole image first, then its metadata boxes)."""
    from common.regions.extract import detectron2_box_features
    from common.regions.image import read_image

    meta = read_vcr_metadata(meta_path)
    rgb = read_image(image)
    if (rgb.shape[1], rgb.shape[0]) != (int(meta["width"]), int(meta["height"])):
        raise InputError(meta_path, f"metadata says {meta['width']}x{meta['height']} but {image.name} is "
                                    f"{rgb.shape[1]}x{rgb.shape[0]}", field="width")
    feats = detectron2_box_features(model, rgb, np.asarray(meta["boxes"]), dtype)
    return {"image_features": feats[0], "object_features": feats[1:]}


def extract_dir(image_dir: str | Path, output_dir: str | Path, weights: str | Path, trust: bool = False,
                dtype: str = "fp32", progress: bool = True) -> tuple[int, int]:
    """Extract every image of image_dir not yet in output_dir; returns (written, skipped)."""
    from tqdm import tqdm

    from common.regions.weights import load_detector

    jobs = image_jobs(image_dir)
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a directory", field="output_dir")
    todo = [job for job in jobs if not (out / f"{job[2]}.pkl").is_file()]
    if not todo:
        return 0, len(jobs)
    model = load_detector(weights, "detectron2", trust=trust)
    out.mkdir(parents=True, exist_ok=True)
    for image, meta, key in tqdm(todo, desc="region features", disable=not progress):
        write_pickle_atomic(extract_image(model, image, meta, dtype), out / f"{key}.pkl")
    return len(todo), len(jobs) - len(todo)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags and extract."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image_dir", required=True, help="VCR images: <movie>/<id>.jpg with <movie>/<id>.json")
    p.add_argument("--output_dir", required=True, help="where <id>.pkl feature files go (existing ones are kept)")
    p.add_argument("--weights", required=True,
                   help="detectron2 mask_rcnn_R_101_C4_3x model_final_*.pkl (model zoo)")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="compute precision (bf16: CPU autocast)")
    p.add_argument("--no_progress", action="store_true", help="no tqdm progress bar")
    add_trust_flag(p)
    args = p.parse_args(argv)
    written, skipped = extract_dir(args.image_dir, args.output_dir, args.weights, args.trust_checkpoint, args.dtype,
                                   not args.no_progress)
    print(f"wrote {written} feature files to {args.output_dir} ({skipped} already there)")
    return 0


if __name__ == "__main__":
    run_cli(main)
