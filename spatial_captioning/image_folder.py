"""Captioning a folder of your own images (issue 13): ``eval.py --image_folder DIR`` and the bottom-up features.

Regions come from bottom-up-attention's Faster R-CNN R101-C4 (``common.regions``: 600/1000 resize, RPN, RoIPool, res5,
per-class NMS 0.3, confidence 0.2, 10-100 boxes), or from ``--feature_dir`` files written by
``scripts/extract_bu_features.py``. Each image's grid vectors are built from its boxes exactly as ``prepro_areas``
does (cell weighting), the checkpoint decodes with its infos' vocabulary and the decoding flags, and the run writes
``<vis_dir>/vis.json`` plus ``<vis_dir>/png/<id>.png`` (regions with class/attribute labels, the grid, the caption).

An image's id is the number its file name ends with (``COCO_val2014_000000391895.jpg`` -> 391895, ``42.jpg`` -> 42),
the name the feature directories and the prepro scripts key files by.
"""
from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InputError, run_cli

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
BU_DIRS = ("cocobu_att", "cocobu_fc", "cocobu_box", "cocobu_info")


def add_image_folder_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of the raw-image mode (eval.py's parser gains them)."""
    g = p.add_argument_group("raw images (--image_folder)")
    g.add_argument("--detector_weights", type=str, default="",
                   help="bottom-up-attention.pytorch bua-caffe-frcn-r101_with_attributes.pth (regions on the fly)")
    g.add_argument("--feature_dir", type=str, default="",
                   help="read cocobu_att/cocobu_box[/cocobu_info] of scripts/extract_bu_features.py instead")
    g.add_argument("--vg_vocab_dir", type=str, default="",
                   help="directory with objects_vocab.txt / attributes_vocab.txt (bottom-up-attention's evaluation/) "
                        "for the PNG labels; without it labels are class numbers")
    g.add_argument("--detector_dtype", choices=["fp32", "bf16"], default="fp32", help="detector precision")
    return p


def image_number(path: Path) -> int:
    """The id of an image file: the number its stem ends with."""
    m = re.search(r"(\d+)$", path.stem)
    if m is None:
        raise InputError(path, "file name does not end with an image id number (name it like 42.jpg or "
                               "COCO_val2014_000000000042.jpg)", field="id")
    return int(m.group(1))


def list_images(folder: str | Path) -> list[tuple[int, Path]]:
    """(id, path) of every image file directly in folder, sorted by name; ids must be unique."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "image folder not found", field="image_folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(folder, f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder", field="image_folder")
    seen: dict[int, Path] = {}
    for path in files:
        iid = image_number(path)
        if iid in seen:
            raise InputError(path, f"image id {iid} also used by {seen[iid].name}", field="id")
        seen[iid] = path
    return [(iid, path) for path, iid in ((p, image_number(p)) for p in files)]


def check_readable(path: Path) -> tuple[int, int]:
    """(width, height) of an image file that PIL can decode; otherwise one InputError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(path, f"not a readable image ({err})", field="image") from None


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "xb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bu_files(out_dir: Path, iid: int, regions: dict[str, np.ndarray], width: int, height: int) -> None:
    """cocobu_att/<id>.npz (feat), cocobu_fc/<id>.npy (mean), cocobu_box/<id>.npy as make_bu_data.py writes them,
    plus cocobu_info/<id>.json (image size, object/attribute ids and confidences for the pictures)."""
    feats = np.ascontiguousarray(regions["features"], dtype=np.float32)
    boxes = np.ascontiguousarray(regions["boxes"], dtype=np.float32)
    info = {"image_w": width, "image_h": height, "num_boxes": len(boxes)}
    for key in ("objects", "objects_conf", "attrs", "attrs_conf"):
        info[key] = np.asarray(regions[key]).tolist()
    for d in BU_DIRS:
        (out_dir / d).mkdir(parents=True, exist_ok=True)
    _atomic(out_dir / "cocobu_info" / f"{iid}.json", lambda h: h.write(json.dumps(info).encode()))
    _atomic(out_dir / "cocobu_box" / f"{iid}.npy", lambda h: np.save(h, boxes))
    _atomic(out_dir / "cocobu_fc" / f"{iid}.npy", lambda h: np.save(h, feats.mean(0)))
    _atomic(out_dir / "cocobu_att" / f"{iid}.npz", lambda h: np.savez_compressed(h, feat=feats))


def _done(out_dir: Path, iid: int) -> bool:
    return all((out_dir / d / f"{iid}.{ext}").is_file()
               for d, ext in (("cocobu_att", "npz"), ("cocobu_fc", "npy"), ("cocobu_box", "npy")))


def extract_folder(image_dir: str | Path, output_dir: str | Path, weights: str | Path, trust: bool = False,
                   dtype: str = "fp32", progress: bool = True) -> tuple[int, int]:
    """Bottom-up features of every image of image_dir not yet in output_dir; returns (written, skipped)."""
    from tqdm import tqdm

    from common.regions.extract import bottom_up_regions
    from common.regions.image import read_image
    from common.regions.weights import load_detector

    images = list_images(image_dir)
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a directory", field="output_dir")
    todo = [(iid, path) for iid, path in images if not _done(out, iid)]
    for _, path in todo:
        check_readable(path)
    if not todo:
        return 0, len(images)
    detector = load_detector(weights, "bottom_up", trust=trust)
    for iid, path in tqdm(todo, desc="bottom-up features", disable=not progress):
        rgb = read_image(path)
        write_bu_files(out, iid, bottom_up_regions(detector, rgb, dtype), rgb.shape[1], rgb.shape[0])
    return len(todo), len(images) - len(todo)


def read_bu_files(feature_dir: str | Path, iid: int, feat_size: int) -> dict[str, Any]:
    """Features (K, D), boxes (K, 4) and the optional info of one image from a --feature_dir, checked."""
    root = Path(feature_dir)
    att, box = root / "cocobu_att" / f"{iid}.npz", root / "cocobu_box" / f"{iid}.npy"
    for path in (att, box):
        if not path.is_file():
            raise InputError(path, "feature file not found (run scripts/extract_bu_features.py)", record=iid)
    try:
        with np.load(att, allow_pickle=False) as data:
            if "feat" not in data.files:
                raise InputError(att, "missing", record=iid, field="feat")
            feat = np.asarray(data["feat"])
        boxes = np.load(box, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(att, f"unreadable feature files ({err})", record=iid) from None
    feat = feat.reshape(-1, feat.shape[-1]) if feat.ndim > 2 else feat
    if feat.ndim != 2 or feat.shape[0] == 0 or feat.shape[1] != feat_size or feat.dtype.kind != "f":
        raise InputError(att, f"expected (K, {feat_size}) float features, got {feat.shape} {feat.dtype}", record=iid,
                         field="feat")
    if not np.isfinite(feat).all():
        raise InputError(att, "NaN or infinite features", record=iid, field="feat")
    if boxes.shape != (len(feat), 4) or not np.isfinite(boxes).all():
        raise InputError(box, f"expected ({len(feat)}, 4) finite boxes, got {boxes.shape}", record=iid, field="box")
    info_path = root / "cocobu_info" / f"{iid}.json"
    info: dict = {}
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(info_path, f"not valid JSON ({err})", record=iid) from None
        for key in ("objects", "objects_conf", "attrs", "attrs_conf"):
            value = info.get(key)
            if not isinstance(value, list) or len(value) != len(feat):
                raise InputError(info_path, f"expected a list of {len(feat)} values (one per region)", record=iid,
                                 field=key)
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in value):
                raise InputError(info_path, "expected non-negative numbers", record=iid, field=key)
    return {"features": feat.astype(np.float32), "boxes": boxes.astype(np.float64), "info": info}


def _l2_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def model_side_inputs(opt: Any, feats: np.ndarray, boxes: np.ndarray, width: int, height: int):
    """(feats tensor, boxes tensor or None) for one image, as the DataLoader would build them for this model."""
    import torch

    from spatial_captioning.features import grid_vectors, relative_boxes

    caption_model = getattr(opt, "caption_model", "")
    if caption_model == "show_tell":
        return torch.from_numpy(feats.mean(0, keepdims=True).astype(np.float32)), None
    if int(getattr(opt, "norm_img_feat", 0) or 0):
        feats = _l2_rows(feats)
    use_grid = bool(getattr(opt, "use_grid", False)) or caption_model == "spatial_pe"
    use_box = bool(getattr(opt, "use_box", False)) or caption_model in ("ort", "relation_transformer")
    box_coord = getattr(opt, "enc_pos_type", "gxg") == "box-coord"
    rel = relative_boxes(boxes, width, height)
    side = None
    if use_grid and not box_coord:
        side = grid_vectors(rel, int(getattr(opt, "num_grids", 576) or 576))
    elif use_box or box_coord:
        side = np.concatenate([rel[:, :2], rel[:, 2:] - rel[:, :2]], 1) if box_coord else rel
    if side is not None and int(getattr(opt, "norm_box_feat", 0) or 0):
        side = _l2_rows(side)
    to = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))[None]  # noqa: E731
    return to(feats), (None if side is None else to(side))


def _vocab_lines(vocab_dir: str, name: str) -> list[str] | None:
    if not vocab_dir:
        return None
    path = Path(vocab_dir) / name
    if not path.is_file():
        raise InputError(path, "vocabulary file not found", field="vg_vocab_dir")
    return [line.split(",")[0].strip() for line in path.read_text().splitlines() if line.strip()]


def render_regions_png(out_path: Path, image: Path, boxes: np.ndarray, labels: list[str], grid: int,
                       caption: str, title: str) -> Path:
    """The image with its regions (labelled, most confident first), the g x g grid and the caption."""
    import textwrap
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from PIL import Image

    with Image.open(image) as im:
        pixels = np.asarray(im.convert("RGB"))
    h, w = pixels.shape[:2]
    fig, ax = plt.subplots(figsize=(6, 6.6))
    ax.imshow(pixels)
    for k in range(1, grid):
        ax.axvline(w * k / grid, color="white", lw=0.5, alpha=0.6)
        ax.axhline(h * k / grid, color="white", lw=0.5, alpha=0.6)
    for j, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, dtype=float)):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.2, edgecolor="#ff7f0e"))
        if j < len(labels):
            ax.text(x1 + 2, y1 + 2, labels[j], color="white", fontsize=6, va="top",
                    bbox={"facecolor": "#ff7f0e", "alpha": 0.8, "pad": 1, "lw": 0})
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    fig.text(0.03, 0.03, textwrap.fill("caption: " + caption, 70), fontsize=9, va="bottom", family="monospace")
    fig.subplots_adjust(bottom=0.14, top=0.94, left=0.02, right=0.98)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp.png")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(out_path)
    return out_path


def _labels(info: dict, objects: list[str] | None, attrs: list[str] | None, limit: int = 12) -> list[str]:
    """Per-box 'attribute object' labels for the `limit` most confident boxes ('' for the others)."""
    if "objects" not in info:
        return []
    conf = np.asarray(info.get("objects_conf", [0.0] * len(info["objects"])))
    top = set(np.argsort(-conf, kind="stable")[:limit].tolist())
    out = []
    for j, obj in enumerate(info["objects"]):
        if j not in top:
            out.append("")
            continue
        obj = int(obj)
        name = objects[obj] if objects and obj < len(objects) else f"obj{obj}"
        attr = int(info["attrs"][j]) if "attrs" in info else None
        aname = (attrs[attr] if attrs and attr < len(attrs) else f"attr{attr}") if attr is not None else ""
        out.append(f"{aname} {name}".strip())
    return out


def caption_image_folder(opt: Any, given: set[str]) -> dict[str, Any]:
    """eval.py --image_folder: caption every image of the folder; writes vis.json and one PNG per image."""
    from types import SimpleNamespace

    import torch

    from common.checkpoint import atomic_write_json
    from spatial_captioning import models
    from spatial_captioning.captions import decode_sequence
    from spatial_captioning.checkpoints import load_infos, load_model_weights
    from spatial_captioning.evaluation import merge_eval_options, plan_outputs
    from spatial_captioning.models.spatial_encoding import grid_side

    images = list_images(opt.image_folder)
    for flag in ("infos_path", "model"):
        if not getattr(opt, flag, ""):
            raise InputError(f"--{flag}", "required with --image_folder (the released infos_<id>.pkl and model)")
    if not Path(opt.model).is_file():
        raise InputError(opt.model, "model file not found", field="model")
    feature_dir, weights = getattr(opt, "feature_dir", ""), getattr(opt, "detector_weights", "")
    if not feature_dir and not weights:
        raise InputError("--detector_weights", "--image_folder needs --detector_weights (bottom-up-attention .pth) "
                                               "or --feature_dir (scripts/extract_bu_features.py output)")
    trust = bool(getattr(opt, "trust_checkpoint", False))
    infos = load_infos(opt.infos_path, trust=trust)
    for key in ("opt", "vocab"):
        if key not in infos:
            raise InputError(opt.infos_path, "infos lacks it (spec 6.2)", field=key)
    run = SimpleNamespace(**merge_eval_options(vars(opt), given, dict(infos["opt"])))
    feat_size = int(getattr(run, "img_feat_size", 2048) or 2048)
    vis_dir = Path(opt.vis_dir) if getattr(opt, "vis_dir", "") else Path(opt.model).resolve().parent / "vis"
    plan_outputs([vis_dir / "vis.json"] + [vis_dir / "png" / f"{iid}.png" for iid, _ in images],
                 bool(int(getattr(opt, "overwrite", 0) or 0)))
    sizes = {iid: check_readable(path) for iid, path in images}
    stored = {iid: read_bu_files(feature_dir, iid, feat_size) for iid, _ in images} if feature_dir else {}
    objects = _vocab_lines(getattr(opt, "vg_vocab_dir", ""), "objects_vocab.txt")
    attrs = _vocab_lines(getattr(opt, "vg_vocab_dir", ""), "attributes_vocab.txt")
    try:
        model = models.setup(run)
    except ValueError as err:
        raise InputError(opt.infos_path, f"cannot build the model its opt describes: {err}", field="opt") from None
    load_model_weights(model, opt.model, trust=trust)
    model.eval()
    detector = None
    if not feature_dir:
        from common.regions.weights import load_detector

        detector = load_detector(weights, "bottom_up", trust=trust)
        if detector.cfg.trunk.res5_channels != feat_size:
            raise InputError(weights, f"detector features are {detector.cfg.trunk.res5_channels}-d but the model "
                                      f"expects {feat_size} (infos img_feat_size)", field="weights")
    decode_opt = {k: getattr(run, k) for k in ("sample_max", "beam_size", "temperature", "decoding_constraint",
                                               "group_size", "diversity_lambda", "max_ppl") if hasattr(run, k)}
    use_grid = bool(getattr(run, "use_grid", False)) or getattr(run, "caption_model", "") == "spatial_pe"
    grid = grid_side(int(run.num_grids)) if use_grid else 0
    predictions = []
    for iid, path in images:
        if detector is not None:
            from common.regions.extract import bottom_up_regions
            from common.regions.image import read_image

            regions = bottom_up_regions(detector, read_image(path), getattr(opt, "detector_dtype", "fp32"))
            feats, boxes = regions["features"], regions["boxes"].astype(np.float64)
            info = {k: np.asarray(regions[k]).tolist() for k in ("objects", "objects_conf", "attrs", "attrs_conf")}
        else:
            feats, boxes, info = stored[iid]["features"], stored[iid]["boxes"], stored[iid]["info"]
        width, height = sizes[iid]
        x, side = model_side_inputs(run, feats, boxes, width, height)
        with torch.no_grad():
            seq, _ = model(x, None, side, opt=decode_opt, mode="sample")
        caption = decode_sequence(infos["vocab"], seq.cpu().numpy())[0]
        predictions.append({"image_id": iid, "caption": caption, "file_path": path.name})
        print(f"image {iid}: {caption}")
        render_regions_png(vis_dir / "png" / f"{iid}.png", path, boxes, _labels(info, objects, attrs), grid,
                           caption, f"{path.name} ({len(boxes)} regions)")
    atomic_write_json(vis_dir / "vis.json", predictions)
    return {"predictions": predictions, "vis_dir": vis_dir}


def write_demo_checkpoint(out_dir: str | Path, feat_size: int = 128, seed: int = 0) -> dict[str, Path]:
    """A tiny random spatial_pe captioner (model.pth + infos_demo.pkl) and tiny bottom-up weights, for the demo."""
    import torch

    from common.checkpoint import atomic_torch_save
    from common.regions.weights import write_random_weights
    from spatial_captioning import models
    from spatial_captioning.checkpoints import save_pickle
    from spatial_captioning.opts import parse_train_opt

    out = Path(out_dir)
    words = "a an the man woman person dog cat sitting standing on in with of table street grass".split()
    vocab = {str(i + 1): w for i, w in enumerate(words)}
    opt = parse_train_opt(["--id", "demo", "--caption_model", "spatial_pe", "--input_encoding_size", "64",
                           "--img_feat_size", str(feat_size), "--num_layers", "1", "--ff_size", "128", "--heads",
                           "4", "--num_grids", "36", "--device", "cpu", "--checkpoint_path", str(out)])
    opt.vocab_size, opt.seq_length = len(vocab), 12
    torch.manual_seed(seed)
    model = models.setup(opt)
    atomic_torch_save(model.state_dict(), out / "model.pth")
    save_pickle({"opt": vars(opt), "vocab": vocab}, out / "infos_demo.pkl")
    weights = write_random_weights(out / "bua_tiny.pth", "bottom_up", seed=seed)
    return {"model": out / "model.pth", "infos": out / "infos_demo.pkl", "weights": weights}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m spatial_captioning.image_folder``: eval.py's flags in raw-image mode (or --demo_setup DIR)."""
    from spatial_captioning.opts import eval_parser, explicit_options

    if argv is None:
        import sys

        argv = sys.argv[1:]
    if len(argv) == 2 and argv[0] == "--demo_setup":
        for name, path in write_demo_checkpoint(argv[1]).items():
            print(f"{name}: {path}")
        return 0
    parser = eval_parser()  # eval.py's parser already carries the raw-image flags
    opt = parser.parse_args(argv)
    if not opt.image_folder:
        parser.error("--image_folder is required")
    caption_image_folder(opt, explicit_options(parser, argv))
    return 0


if __name__ == "__main__":
    run_cli(main)
