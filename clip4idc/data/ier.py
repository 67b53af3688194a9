"""Image Editing Request (`--datatype ier`; paper only, not in the original code, spec 3.5).

Layout of the release of Tan et al. 2019 ("Expressing Visual Relationships via Language"):
`{data_path}/{train,valid,test}.json`, each a list of records
`{"img0": "before.jpg", "img1": "after.jpg", "sents": [str, ...], "uid": ...}` (one request per
training pair, three per valid/test pair), images under `--features_path`. The split name `val` maps
to `valid.json`. Items have the Spot-the-Diff tuples; result/GT image id = `str(uid)`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from common.errors import InputError
from clip4idc.data.common import Sampler, coco_gt, read_json
from clip4idc.data.images import load_image
from clip4idc.data.text import caption_text, retrieval_text
from clip4idc.tokenizer import ClipTokenizer

SPLIT_FILES = {"train": "train.json", "val": "valid.json", "valid": "valid.json", "test": "test.json"}


def read_ier(path: str | Path) -> list[dict]:
    """Validated IER records with `uid` as a string."""
    data = read_json(path)
    if not isinstance(data, list):
        raise InputError(path, "expected a list of {img0, img1, sents, uid} records")
    out = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise InputError(path, "expected an object", record=i)
        for field in ("img0", "img1"):
            if not isinstance(rec.get(field), str) or not rec[field]:
                raise InputError(path, "missing image file name", record=i, field=field)
        sents = rec.get("sents")
        if not isinstance(sents, list) or not sents or not all(isinstance(s, str) for s in sents):
            raise InputError(path, "expected a non-empty list of strings", record=i, field="sents")
        if "uid" not in rec:
            raise InputError(path, "missing uid", record=i, field="uid")
        out.append({"img0": rec["img0"], "img1": rec["img1"], "sents": list(sents), "uid": str(rec["uid"])})
    return out


def ier_gt(path: str | Path) -> dict:
    """COCO GT of an IER split file (image id = uid)."""
    recs = read_ier(path)
    return coco_gt([r["uid"] for r in recs], [(r["uid"], s) for r in recs for s in r["sents"]])


class _IerBase(Dataset):
    def __init__(self, data_path, features_path, subset: str, tokenizer: ClipTokenizer, max_words: int = 32,
                 image_resolution: int = 224, sampler: Sampler | None = None):
        if subset not in SPLIT_FILES:
            raise ValueError(f"unknown IER split {subset!r}")
        self.file = Path(data_path) / SPLIT_FILES[subset]
        self.images, self.subset = Path(features_path), subset
        self.tokenizer, self.max_words, self.size = tokenizer, max_words, image_resolution
        self.sampler = sampler or Sampler()
        self.pairs = read_ier(self.file)

    def _images(self, rec: dict):
        return load_image(self.images / rec["img0"], self.size), load_image(self.images / rec["img1"], self.size)


class IerRetrieval(_IerBase):
    """One item per request sentence: (text, mask, segment, bef, aft, image_mask)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.items, self.cut_off_points = [], []
        for n, rec in enumerate(self.pairs):
            self.items.extend((n, s) for s in rec["sents"])
            self.cut_off_points.append(len(self.items))
        self.multi_sentence_per_pair = True

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        n, cap = self.items[index]
        text, mask, segment = retrieval_text(self.tokenizer, cap, self.max_words)
        bef, aft = self._images(self.pairs[n])
        return text, mask, segment, bef, aft, np.ones(2, dtype=np.int64)


class IerCaption(_IerBase):
    """One item per pair with a sampled request: the Spot-style 10-tuple."""

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        rec = self.pairs[index]
        cap = self.sampler.rng(index).choice(rec["sents"])
        text, mask, segment, in_ids, dec_mask, out_ids = caption_text(self.tokenizer, cap, self.max_words)
        bef, aft = self._images(rec)
        return (text, mask, segment, bef, aft, np.ones(2, dtype=np.int64), in_ids, dec_mask, out_ids, rec["uid"])
