"""Region geometry and feature files: grid vectors (prepro_areas), relative boxes, bottom-up TSV, ResNet grids."""
from __future__ import annotations

import base64
import csv
import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from common.errors import InputError
from spatial_captioning.models.spatial_encoding import grid_side

TSV_FIELDNAMES = ["image_id", "image_w", "image_h", "num_boxes", "boxes", "features"]
BU_TSV_FILES = ["karpathy_test_resnet101_faster_rcnn_genome.tsv", "karpathy_val_resnet101_faster_rcnn_genome.tsv",
                "karpathy_train_resnet101_faster_rcnn_genome.tsv.0",
                "karpathy_train_resnet101_faster_rcnn_genome.tsv.1"]
WEIGHTINGS = ("cell", "box")


def relative_boxes(boxes: np.ndarray, width: float | None, height: float | None) -> np.ndarray:
    """Divide [x1, y1, x2, y2] by [W, H, W, H] and clip to [0, 1]; boxes already <= 1 are taken as relative."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size and boxes.max() <= 1.0:
        return np.clip(boxes, 0.0, 1.0)
    if not width or not height:
        raise ValueError("absolute boxes need the image width and height")
    return np.clip(boxes / np.array([width, height, width, height], dtype=np.float64), 0.0, 1.0)


def grid_vectors(rel_boxes: np.ndarray, num_grids: int, weighting: str = "cell") -> np.ndarray:
    """(K, G) float32 grid vectors, row-major g x g with rows along y (spec 2.5).

    `cell`: area(box n cell) / area(cell); `box`: area(box n cell) / area(box).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"--weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    g = grid_side(num_grids)
    b = np.asarray(rel_boxes, dtype=np.float64).reshape(-1, 4)
    lo = np.arange(g) / g
    hi = (np.arange(g) + 1) / g
    ox = np.clip(np.minimum(b[:, 2:3], hi) - np.maximum(b[:, 0:1], lo), 0.0, None)  # (K, g) per column
    oy = np.clip(np.minimum(b[:, 3:4], hi) - np.maximum(b[:, 1:2], lo), 0.0, None)  # (K, g) per row
    area = oy[:, :, None] * ox[:, None, :]  # (K, rows, cols)
    if weighting == "cell":
        vec = area * g * g
    else:
        box_area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        vec = area / np.maximum(box_area, 1e-12)[:, None, None]
    return vec.reshape(len(b), g * g).astype(np.float32)


def cell_boxes(grid: int) -> np.ndarray:
    """Relative boxes of the cells of a grid x grid feature map in row-major order (ResNet att features)."""
    r, c = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    return np.stack([c / grid, r / grid, (c + 1) / grid, (r + 1) / grid], -1).reshape(-1, 4)


def _b64_array(text: str, dtype=np.float32) -> np.ndarray:
    data = text.encode("ascii")
    data += b"=" * (-len(data) % 4)  # the "Incorrect padding" users hit in py3 (spec 8)
    return np.frombuffer(base64.b64decode(data, validate=True), dtype=dtype)


def read_bottom_up_tsv(path: str | os.PathLike) -> Iterator[dict]:
    """Yield {image_id, image_w, image_h, num_boxes, boxes (K, 4), features (K, D)} from a bottom-up TSV (text mode)."""
    csv.field_size_limit(min(sys.maxsize, 2 ** 31 - 1))
    with open(path, "r", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", fieldnames=TSV_FIELDNAMES)
        for row_no, row in enumerate(reader):
            try:
                num_boxes = int(row["num_boxes"])
                item = {"image_id": int(row["image_id"]), "image_w": int(float(row["image_w"])),
                        "image_h": int(float(row["image_h"])), "num_boxes": num_boxes}
            except (TypeError, ValueError) as err:
                raise InputError(path, f"bad header fields: {err}", record=row_no, field="num_boxes") from None
            for field, width in (("boxes", 4), ("features", None)):
                if row.get(field) is None:
                    raise InputError(path, "missing field", record=row_no, field=field)
                try:
                    arr = _b64_array(row[field])
                except (ValueError, base64.binascii.Error) as err:
                    raise InputError(path, f"bad base64: {err}", record=row_no, field=field) from None
                if num_boxes <= 0 or arr.size == 0 or arr.size % num_boxes or (width and arr.size != num_boxes * width):
                    raise InputError(path, f"{arr.size} floats do not split into {num_boxes} boxes", record=row_no,
                                     field=field)
                item[field] = arr.reshape(num_boxes, width or -1)
            yield item


def make_bu_data(downloaded_feats: str, output_dir: str, files: list[str] | None = None) -> int:
    """Split bottom-up TSVs into <out>_att/<id>.npz, <out>_fc/<id>.npy, <out>_box/<id>.npy; return image count."""
    dirs = {k: Path(f"{output_dir}_{k}") for k in ("att", "fc", "box")}
    for d in dirs.values():
        if d.exists() and any(d.iterdir()):
            raise InputError(d, "output directory exists and is not empty (never overwritten silently)")
        d.mkdir(parents=True, exist_ok=True)
    count = 0
    for name in files or BU_TSV_FILES:
        path = Path(downloaded_feats) / "trainval" / name
        if not path.is_file():
            raise InputError(path, "TSV not found (unzip trainval.zip into --downloaded_feats)")
        print(f"Reading {path}")
        for item in read_bottom_up_tsv(path):
            iid = str(item["image_id"])
            np.savez_compressed(dirs["att"] / f"{iid}.npz", feat=item["features"])
            np.save(dirs["fc"] / f"{iid}.npy", item["features"].mean(0))
            np.save(dirs["box"] / f"{iid}.npy", item["boxes"])
            count += 1
    return count


def write_bottom_up_tsv(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write rows {image_id, image_w, image_h, boxes, features} in the bottom-up TSV format (tests, synthetic data)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, delimiter="\t", fieldnames=TSV_FIELDNAMES)
        for r in rows:
            writer.writerow({"image_id": r["image_id"], "image_w": r["image_w"], "image_h": r["image_h"],
                             "num_boxes": len(r["boxes"]),
                             "boxes": base64.b64encode(np.ascontiguousarray(r["boxes"], np.float32)).decode("ascii"),
                             "features": base64.b64encode(np.ascontiguousarray(r["features"], np.float32)).decode("ascii")})


def _image_sizes(input_json: str, image_root: str) -> dict[int, tuple[float, float]]:
    """cocoid -> (W, H) from a cocotalk.json / Karpathy json (`width`/`height`), else by opening the images."""
    import json

    if not input_json:
        return {}
    data = json.loads(Path(input_json).read_text())
    sizes = {}
    for i, img in enumerate(data.get("images", [])):
        iid = img.get("id", img.get("cocoid"))
        if "width" in img and "height" in img:
            sizes[int(iid)] = (float(img["width"]), float(img["height"]))
        elif image_root:
            rel = img.get("file_path") or os.path.join(img.get("filepath", ""), img.get("filename", ""))
            path = Path(image_root) / rel
            if not path.is_file():
                raise InputError(path, "image not found (needed for its size)", record=i, field="file_path")
            from PIL import Image

            with Image.open(path) as im:
                sizes[int(iid)] = tuple(map(float, im.size))
    return sizes


def prepro_areas(input_dir: str, output_dir: str, num_grids: int = 144, input_json: str = "", image_root: str = "",
                 weighting: str = "cell", grid_boxes: int = 0, verbose: bool = True) -> int:
    """Write <output_dir>/<id>.npy grid vectors (K, G) for every box file of input_dir (spec 2.5); return the count."""
    grid_side(num_grids)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if grid_boxes:
        # ResNet grid features have no box files: use the cells of the grid_boxes x grid_boxes map (extension).
        ids = [int(p.name.split(".")[0]) for p in sorted(Path(input_dir).glob("*.npz"))]
        vec = grid_vectors(cell_boxes(grid_boxes), num_grids, weighting)
        for iid in ids:
            np.save(out / f"{iid}.npy", vec)
        return len(ids)
    sizes = _image_sizes(input_json, image_root)
    files = sorted(Path(input_dir).glob("*.npy"))
    if not files:
        raise InputError(input_dir, "no <id>.npy box files found")
    from tqdm import tqdm

    for path in tqdm(files, desc="grid vectors", disable=not verbose):
        boxes = np.load(path)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise InputError(path, f"expected (K, 4) boxes, got shape {boxes.shape}")
        try:
            iid = int(path.stem)
        except ValueError:
            raise InputError(path, "file name is not an image id") from None
        w, h = sizes.get(iid, (None, None))
        try:
            rel = relative_boxes(boxes, w, h)
        except ValueError:
            raise InputError(path, "absolute boxes but no width/height for this image: pass --input_json with "
                                   "sizes (prepro_labels --images_root) or --image_root", record=iid) from None
        np.save(out / f"{iid}.npy", grid_vectors(rel, num_grids, weighting))
    return len(files)


def prepro_bbox_relative_coords(input_json: str, image_root: str, input_box_dir: str, output_dir: str,
                                verbose: bool = True) -> int:
    """Write <output_dir>/<id>.npy = box / [W, H, W, H] clipped to [0, 1] (float64, as ORT; spec 2.6)."""
    import json

    data = json.loads(Path(input_json).read_text()) if input_json else {"images": []}
    by_id = {int(img.get("cocoid", img.get("id"))): img for img in data["images"]}
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(Path(input_box_dir).glob("*.npy"))
    for i, path in enumerate(files):
        iid = int(Path(path).stem)  # pathlib stem, not split('/') (ORT issue #19, spec 9.25)
        img = by_id.get(iid)
        if img is None:
            raise InputError(input_json, "image id of a box file is not in the json", record=iid)
        if image_root:
            rel_path = img.get("file_path") or os.path.join(img.get("filepath", ""), img.get("filename", ""))
            from PIL import Image

            full = Path(image_root) / rel_path
            if not full.is_file():
                raise InputError(full, "image not found (needed for its size)", record=iid)
            with Image.open(full) as im:
                w, h = im.size
        elif "width" in img and "height" in img:
            w, h = img["width"], img["height"]
        else:
            raise InputError(input_json, "no --image_root and no width/height for this image", record=iid)
        boxes = np.load(path)
        np.save(out / f"{iid}.npy", np.clip(boxes / np.array([w, h, w, h], dtype=np.float64), 0.0, 1.0))
        if verbose and (i + 1) % 1000 == 0:
            print(f"processed {i + 1} images (of {len(files)})")
    return len(files)


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def build_cnn(model: str, model_root: str, trust: bool = False):
    """A ResNet returning the last conv map: a transformers ResNetModel directory `<model_root>/<model>/`
    (config.json + weights), or torchvision's with `<model_root>/<model>.pth` when torchvision is importable."""
    import torch

    hf_dir = Path(model_root) / model
    if (hf_dir / "config.json").is_file():
        from transformers import ResNetModel

        net = ResNetModel.from_pretrained(str(hf_dir), local_files_only=True).eval()
        return lambda x: net(pixel_values=x).last_hidden_state
    pth = Path(model_root) / f"{model}.pth"
    if pth.is_file():
        try:
            import torchvision  # imported lazily: its CPU build is not always installable
        except Exception as err:  # noqa: BLE001 - any import failure means the same thing here
            raise InputError(pth, f"torchvision is needed for a torchvision .pth ResNet but cannot be imported ({err}); "
                                  f"save a transformers ResNetModel to {hf_dir}/ instead") from None
        net = getattr(torchvision.models, model)()
        from common.checkpoint import extract_state_dict, load_checkpoint_file, load_state_dict_strict

        load_state_dict_strict(net, extract_state_dict(load_checkpoint_file(pth, trust=trust)), source=pth)
        net.eval()
        body = torch.nn.Sequential(*list(net.children())[:-2])
        return body
    raise InputError(model_root, f"no pretrained {model}: expected {hf_dir}/config.json (transformers ResNetModel) "
                                 f"or {pth} (torchvision); random weights would give meaningless features")


def prepro_feats(input_json: str, output_dir: str, images_root: str, att_size: int = 14, model: str = "resnet101",
                 model_root: str = "./data/imagenet_weights", trust: bool = False) -> int:
    """Top-down ResNet features: <out>_fc/<cocoid>.npy (C,) and <out>_att/<cocoid>.npz feat (att, att, C) (spec 2.3)."""
    import json

    import torch
    import torch.nn.functional as F
    from PIL import Image

    images = json.loads(Path(input_json).read_text())["images"]
    net = build_cnn(model, model_root, trust)
    fc_dir, att_dir = Path(f"{output_dir}_fc"), Path(f"{output_dir}_att")
    fc_dir.mkdir(parents=True, exist_ok=True)
    att_dir.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        path = Path(images_root) / img["filepath"] / img["filename"]
        if not path.is_file():
            raise InputError(path, "image not found", record=i, field="filename")
        arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0  # grey -> 3 channels
        arr = (arr - IMAGENET_MEAN) / IMAGENET_STD
        x = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)
        with torch.no_grad():
            conv = net(x)  # (1, C, h, w)
            fc = conv.mean((2, 3)).squeeze(0)
            att = F.adaptive_avg_pool2d(conv, (att_size, att_size)).squeeze(0).permute(1, 2, 0)
        np.save(fc_dir / f"{img['cocoid']}.npy", fc.numpy())
        np.savez_compressed(att_dir / f"{img['cocoid']}.npz", feat=att.numpy())
        if i % 1000 == 0:
            print(f"processing {i}/{len(images)} ({i * 100.0 / len(images):.2f}% done)")
    return len(images)
