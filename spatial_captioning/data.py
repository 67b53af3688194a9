"""Dataset reading (cocotalk.json, cocotalk_label.h5, per-image feature files) and batching (spec 3.9 / 3.10)."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np
import torch

from common.errors import InputError


def load_cocotalk(path: str | os.PathLike) -> dict:
    """Read and validate the prepro_labels json (`ix_to_word`, `images[*].{id, split, file_path}`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found (run scripts/prepro_labels.py to create cocotalk.json)")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON: {err}") from None
    if not isinstance(info, dict) or "ix_to_word" not in info:
        # spec 9.21: the original default points at dataset_coco.json; say what is expected instead of a KeyError
        raise InputError(path, "has no 'ix_to_word': --input_json must be the prepro_labels output (cocotalk.json), "
                               "not the Karpathy dataset_coco.json", field="ix_to_word")
    if "images" not in info or not isinstance(info["images"], list):
        raise InputError(path, "missing the 'images' list", field="images")
    for i, img in enumerate(info["images"]):
        for key in ("id", "split"):
            if key not in img:
                raise InputError(path, f"image entry lacks '{key}'", record=i, field=key)
    return info


def unk_index(ix_to_word: dict[str, str]) -> int | None:
    """Index of 'UNK' when it is the last vocabulary entry (what beam search penalises, spec 9.12), else None."""
    v = len(ix_to_word)
    return v if ix_to_word.get(str(v)) == "UNK" else None


LABEL_KEYS = ("labels", "label_start_ix", "label_end_ix", "label_length")


def load_labels(path: str | os.PathLike, num_images: int, vocab_size: int | None = None) -> dict[str, np.ndarray]:
    """Read cocotalk_label.h5 into RAM and check it against the json's images and vocabulary (spec 3.3)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found (run scripts/prepro_labels.py to create the label h5)")
    out = {}
    try:
        with h5py.File(path, "r") as f:
            for key in LABEL_KEYS:
                if key not in f:
                    raise InputError(path, "missing dataset", field=key)
                out[key] = f[key][()]
    except OSError as err:
        raise InputError(path, f"not a readable HDF5 file ({str(err).splitlines()[0][:120]})") from None
    for key, value in out.items():
        if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.integer):
            raise InputError(path, f"must be an integer array, got {getattr(value, 'dtype', type(value))}", field=key)
    labels = out["labels"]
    if labels.ndim != 2 or labels.shape[0] == 0 or labels.shape[1] == 0:
        raise InputError(path, f"labels must be a non-empty 2-D (M, T) array, got shape {labels.shape}",
                         field="labels")
    for key in ("label_start_ix", "label_end_ix"):
        if out[key].shape != (num_images,):
            raise InputError(path, f"{key} has shape {out[key].shape} but the json lists {num_images} images",
                             field=key)
    start, end = out["label_start_ix"].astype(np.int64), out["label_end_ix"].astype(np.int64)
    bad = np.flatnonzero((start < 1) | (end < start) | (end > labels.shape[0]))
    if bad.size:
        i = int(bad[0])
        raise InputError(path, f"caption rows {start[i]}..{end[i]} are outside the {labels.shape[0]} rows of "
                               "'labels' (too few rows, or an image without captions)", record=i,
                         field="label_end_ix")
    if vocab_size is not None and labels.size and (labels.min() < 0 or labels.max() > vocab_size):
        row = int(np.flatnonzero((labels < 0).any(1) | (labels > vocab_size).any(1))[0])
        raise InputError(path, f"word index outside the json's vocabulary 1..{vocab_size}", record=row,
                         field="labels")
    return out


def _load_array(path: Path, image_id: Any, key: str | None = None) -> np.ndarray:
    if not path.is_file():
        raise InputError(path, "feature file not found", record=image_id)
    try:
        if key is None:
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as z:
            if key not in z:
                raise InputError(path, f"npz has no '{key}' array (keys: {list(z.keys())})", record=image_id, field=key)
            return z[key]
    except (ValueError, OSError, EOFError) as err:
        raise InputError(path, f"unreadable: {str(err)[:160]}", record=image_id) from None


def check_array(arr: np.ndarray, path: Path, image_id: Any, field: str, width: int | None) -> np.ndarray:
    """A non-empty, finite, floating (K, width) array, else an InputError naming file, image and field."""
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(path, f"dtype {arr.dtype} is not floating point", record=image_id, field=field)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise InputError(path, f"expected a non-empty (K, D) array, got shape {arr.shape}", record=image_id,
                         field=field)
    if width is not None and arr.shape[1] != width:
        raise InputError(path, f"width {arr.shape[1]} but the model expects {width}", record=image_id, field=field)
    if not np.isfinite(arr).all():
        raise InputError(path, "contains NaN or inf", record=image_id, field=field)
    return arr.astype(np.float32, copy=False)


def _l2_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _opt(opt: Any, name: str, default: Any = None) -> Any:
    return opt.get(name, default) if isinstance(opt, dict) else getattr(opt, name, default)


class DataLoader:
    """One split of the captioning data; iterating yields batch dicts, one pass per `for` loop.

    Train: reshuffled every pass with the loader's own RNG (its state is in `state_dict()`, so a resumed
    run continues mid-epoch with the same order). Val/test: file order, first `length` images.
    Under DDP each rank reads its own equal-length share of every pass.
    """

    def __init__(self, opt: Any, split: str, state: dict | None = None, length: int = -1,
                 rank: int = 0, world_size: int = 1):
        self.opt = opt
        self.split = split
        self.rank, self.world_size = rank, world_size
        self.batch_size = int(_opt(opt, "batch_size", 16))
        self.seq_per_img = int(_opt(opt, "seq_per_img", 5))
        self.info = load_cocotalk(_opt(opt, "input_json"))
        self.ix_to_word = {str(k): v for k, v in self.info["ix_to_word"].items()}
        self.label_path = _opt(opt, "input_label_h5")
        self.h5 = load_labels(self.label_path, len(self.info["images"]), len(self.ix_to_word))
        self.use_grid = bool(_opt(opt, "use_grid", False)) or _opt(opt, "caption_model") == "spatial_pe"
        self.use_box = bool(_opt(opt, "use_box", False)) or _opt(opt, "caption_model") in ("ort", "relation_transformer")
        self.box_coord = _opt(opt, "enc_pos_type", "gxg") == "box-coord"
        self.use_fc = _opt(opt, "caption_model") == "show_tell"
        train_only = int(_opt(opt, "train_only", 0))
        wanted = {"train", "restval"} if split == "train" and not train_only else {split}
        self.split_ix = [i for i, img in enumerate(self.info["images"]) if img["split"] in wanted]
        if length is not None and length > 0:
            self.split_ix = self.split_ix[:length]
        if not self.split_ix:
            raise InputError(_opt(opt, "input_json"), f"no images in split '{split}'", field="split")
        seed = _opt(opt, "seed", None)
        self.rng = random.Random(seed if seed is not None else random.randrange(2 ** 31))
        self.epoch_order: list[int] | None = None
        self.position = 0
        # --cache_features 1 keeps every loaded image in RAM (small data sets only)
        self.cache: dict[int, dict] | None = {} if int(_opt(opt, "cache_features", 0) or 0) else None
        if state:
            self.load_state_dict(state)
        self.load_image(self.split_ix[0])  # feature width / grid size against the model's options, before any work

    # --- vocabulary -----------------------------------------------------------------------------------------
    def vocab_size(self) -> int:
        """Number of words V (model output size is V+1)."""
        return len(self.ix_to_word)

    def seq_length(self) -> int:
        """Caption length T of the label h5."""
        return int(self.h5["labels"].shape[1])

    def get_vocab(self) -> dict[str, str]:
        """ix_to_word with string keys."""
        return self.ix_to_word

    def set_vocab(self, ix_to_word: dict[str, str]) -> None:
        """Replace the vocabulary (eval uses the checkpoint's, spec 9.16)."""
        self.ix_to_word = {str(k): v for k, v in ix_to_word.items()}

    def get_seq_per_img(self) -> int:
        """Captions per image per batch."""
        return self.seq_per_img

    # --- resumable position ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Position in the current pass, its order and the RNG state."""
        return {"split": self.split, "epoch_order": self.epoch_order, "position": self.position,
                "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict() returned."""
        self.epoch_order = state.get("epoch_order")
        self.position = int(state.get("position", 0))
        if state.get("rng") is not None:
            rng = state["rng"]
            self.rng.setstate((rng[0], tuple(rng[1]), rng[2]))

    def __len__(self) -> int:
        per_rank = self._per_rank()
        return (per_rank + self.batch_size - 1) // self.batch_size

    def _per_rank(self) -> int:
        return len(self.split_ix) // self.world_size if self.world_size > 1 else len(self.split_ix)

    def _new_order(self) -> list[int]:
        order = list(self.split_ix)
        if self.split == "train":
            self.rng.shuffle(order)
        if self.world_size > 1:
            order = order[: self._per_rank() * self.world_size][self.rank:: self.world_size]
        return order

    def __iter__(self) -> Iterator[dict]:
        if self.epoch_order is None or self.position >= len(self.epoch_order):
            self.epoch_order = self._new_order()
            self.position = 0
        while self.position < len(self.epoch_order):
            ixs = self.epoch_order[self.position: self.position + self.batch_size]
            self.position += len(ixs)
            batch = self.get_batch(ixs)
            batch["bounds"] = {"it_pos_now": self.position, "it_max": len(self.epoch_order),
                               "wrapped": self.position >= len(self.epoch_order)}
            yield batch
        self.epoch_order = None
        self.position = 0

    # --- per-image reading ----------------------------------------------------------------------------------
    def image_record(self, ix: int) -> dict:
        """The json entry of image ix."""
        return self.info["images"][ix]

    def load_image(self, ix: int) -> dict[str, np.ndarray]:
        """Read the feature files of image ix: `feat` (K, D), optional `boxes`, `fc`."""
        if self.cache is not None and ix in self.cache:
            return self.cache[ix]
        out = self._read_image(ix)
        if self.cache is not None:
            self.cache[ix] = out
        return out

    def _read_image(self, ix: int) -> dict[str, np.ndarray]:
        img = self.info["images"][ix]
        image_id = img["id"]
        feat_size = int(_opt(self.opt, "img_feat_size", 2048) or 2048)
        out: dict[str, np.ndarray] = {}
        if self.use_fc:
            path = Path(_opt(self.opt, "input_fc_feat_dir")) / f"{image_id}.npy"
            fc = _load_array(path, image_id)
            out["fc"] = check_array(fc.reshape(1, -1), path, image_id, "fc", feat_size).reshape(-1)
            return out
        feat_path = Path(_opt(self.opt, "input_img_feat_dir")) / f"{image_id}.npz"
        feat = _load_array(feat_path, image_id, "feat")
        feat = check_array(feat.reshape(-1, feat.shape[-1]) if feat.ndim > 2 else feat, feat_path, image_id, "feat",
                           feat_size)
        if int(_opt(self.opt, "norm_img_feat", 0)):
            feat = _l2_rows(feat)
        out["feat"] = feat
        boxes = None
        if self.use_grid and not self.box_coord:
            path = Path(_opt(self.opt, "input_grid_vec_dir")) / f"{image_id}.npy"
            boxes = check_array(_load_array(path, image_id), path, image_id, "grid_vector",
                                int(_opt(self.opt, "num_grids", 576) or 576))
        elif self.use_box or self.box_coord:
            path = Path(_opt(self.opt, "input_rel_box_dir")) / f"{image_id}.npy"
            boxes = check_array(_load_array(path, image_id), path, image_id, "box", 4)
            if self.box_coord:  # spec 4.3: relative (x, y, w, h) through the grid-vector slot
                boxes = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        if boxes is not None:
            if len(boxes) != len(feat):
                raise InputError(path, f"has shape {boxes.shape} but the feature file has {len(feat)} regions "
                                       "(att, box and grid files must list the same boxes)", record=image_id)
            if int(_opt(self.opt, "norm_box_feat", 0)):
                boxes = _l2_rows(boxes)
            out["boxes"] = boxes
        return out

    def captions(self, ix: int) -> np.ndarray:
        """All label rows (n, T) of image ix."""
        start, end = int(self.h5["label_start_ix"][ix]), int(self.h5["label_end_ix"][ix])
        if start < 1 or end < start:
            raise InputError(self.label_path, f"image has no captions (start {start}, end {end})", record=ix,
                             field="label_start_ix")
        return self.h5["labels"][start - 1: end]

    def pick_captions(self, caps: np.ndarray) -> np.ndarray:
        """seq_per_img rows: uniform with replacement if too few, else a random contiguous window (spec 3.9)."""
        n, s = len(caps), self.seq_per_img
        if n < s:
            return caps[[self.rng.randint(0, n - 1) for _ in range(s)]]
        start = self.rng.randint(0, n - s)
        return caps[start: start + s]

    def get_batch(self, ixs: list[int]) -> dict:
        """Build the batch dict of spec 3.10 for images ixs."""
        s = self.seq_per_img
        images = [self.load_image(ix) for ix in ixs]
        caps = [self.captions(ix) for ix in ixs]
        T = self.seq_length()
        labels = np.zeros((len(ixs) * s, T + 2), dtype=np.int64)
        for i, c in enumerate(caps):
            labels[i * s: (i + 1) * s, 1: T + 1] = self.pick_captions(c)
        n_words = (labels[:, 1: T + 1] > 0).sum(1)
        label_masks = (np.arange(T + 2)[None, :] < (n_words + 2)[:, None]).astype(np.float32)
        batch: dict[str, Any] = {
            "labels": torch.from_numpy(labels),
            "label_masks": torch.from_numpy(label_masks),
            "gts": [c.astype(np.uint32) for c in caps],
            "infos": [{"ix": ix, "id": self.info["images"][ix]["id"],
                       "file_path": self.info["images"][ix].get("file_path", "")} for ix in ixs],
            "img_feats": None, "img_masks": None, "boxes": None, "fc_feats": None,
        }
        if self.use_fc:
            fc = np.stack([im["fc"] for im in images])
            batch["fc_feats"] = torch.from_numpy(np.repeat(fc, s, axis=0))
            return batch
        ks = [len(im["feat"]) for im in images]
        L, D = max(ks), images[0]["feat"].shape[1]
        feats = np.zeros((len(ixs), L, D), dtype=np.float32)
        masks = np.zeros((len(ixs), L), dtype=np.float32)
        has_boxes = "boxes" in images[0]
        boxes = np.zeros((len(ixs), L, images[0]["boxes"].shape[1]), dtype=np.float32) if has_boxes else None
        for i, im in enumerate(images):
            k = len(im["feat"])
            if im["feat"].shape[1] != D:
                raise InputError(_opt(self.opt, "input_img_feat_dir"), f"feature size {im['feat'].shape[1]} != {D}",
                                 record=batch["infos"][i]["id"], field="feat")
            feats[i, :k] = im["feat"]
            masks[i, :k] = 1
            if boxes is not None:
                boxes[i, :k] = im["boxes"]
        batch["img_feats"] = torch.from_numpy(np.repeat(feats, s, axis=0))
        batch["img_masks"] = None if len(set(ks)) == 1 else torch.from_numpy(np.repeat(masks, s, axis=0))
        batch["boxes"] = None if boxes is None else torch.from_numpy(np.repeat(boxes, s, axis=0))
        return batch


def model_inputs(batch: dict, device: torch.device | str = "cpu") -> tuple:
    """(feats, masks, boxes) on device: fc features for show_tell, region features otherwise."""
    feats = batch["fc_feats"] if batch.get("fc_feats") is not None else batch["img_feats"]
    return tuple(None if x is None else x.to(device) for x in (feats, batch["img_masks"], batch["boxes"]))
