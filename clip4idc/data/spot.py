"""Spot-the-Diff (`--datatype spot`, spec 3.2): raw annotations, the reformat step, GT builder, datasets."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from common.errors import InputError
from clip4idc.data.common import Sampler, coco_gt, read_json
from clip4idc.data.images import load_image
from clip4idc.data.text import caption_text, retrieval_text
from clip4idc.tokenizer import ClipTokenizer

SPLITS = ("train", "val", "test")


def read_annotations(path: str | Path) -> list[dict]:
    """Entries `{"img_id": str, "sentences": [str, ...]}` of a raw or reformatted Spot file, validated."""
    data = read_json(path)
    if not isinstance(data, list):
        raise InputError(path, "expected a list of {img_id, sentences} records")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise InputError(path, "expected an object", record=i)
        if not isinstance(rec.get("img_id"), (str, int)) or isinstance(rec.get("img_id"), bool):
            raise InputError(path, "missing or non-string img_id", record=i, field="img_id")
        sents = rec.get("sentences")
        if not isinstance(sents, list) or not all(isinstance(s, str) for s in sents):
            raise InputError(path, "expected a list of strings", record=i, field="sentences")
    return [{"img_id": str(r["img_id"]), "sentences": list(r["sentences"])} for r in data]


def reformat(entries: list[dict]) -> list[dict]:
    """Merge entries with the same img_id (first-appearance order, sentences concatenated)."""
    merged: dict[str, list[str]] = {}
    for rec in entries:
        merged.setdefault(rec["img_id"], []).extend(rec["sentences"])
    return [{"img_id": k, "sentences": v} for k, v in merged.items()]


def reformat_dataset(data_path: str | Path, overwrite: bool = False) -> list[Path]:
    """Write reformat_{train,val,test}.json next to the raw files (preprocess/reformat_dataset.py)."""
    root, written = Path(data_path), []
    for split in SPLITS:
        out = root / f"reformat_{split}.json"
        if out.exists() and not overwrite:
            raise InputError(out, "exists; pass --overwrite to replace it")
        with open(out, "w", encoding="utf-8") as f:
            json.dump(reformat(read_annotations(root / f"{split}.json")), f)
        written.append(out)
    return written


def spot_gt(test_json: str | Path) -> dict:
    """COCO GT of the raw test.json: one image entry per raw record (duplicates kept, spec 3.4/9.19)."""
    entries = read_annotations(test_json)
    images = [f"{r['img_id']}.png" for r in entries]
    anns = [(f"{r['img_id']}.png", s) for r in entries for s in r["sentences"]]
    return coco_gt(images, anns)


class _SpotBase(Dataset):
    def __init__(self, data_path, features_path, subset: str, tokenizer: ClipTokenizer, max_words: int = 32,
                 image_resolution: int = 224, sampler: Sampler | None = None):
        self.root, self.images = Path(data_path), Path(features_path)
        self.subset, self.tokenizer, self.max_words, self.size = subset, tokenizer, max_words, image_resolution
        self.sampler = sampler or Sampler()
        self.pairs = read_annotations(self.root / f"reformat_{subset}.json")
        for i, rec in enumerate(self.pairs):
            if not rec["sentences"]:
                raise InputError(self.root / f"reformat_{subset}.json", "no sentences", record=i, field="sentences")

    def _images(self, img_id: str) -> tuple[np.ndarray, np.ndarray]:
        return (load_image(self.images / f"{img_id}.png", self.size),
                load_image(self.images / f"{img_id}_2.png", self.size))


class SpotRetrieval(_SpotBase):
    """One item per sentence: (text, mask, segment, bef, aft, image_mask)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.items, self.cut_off_points = [], []
        for rec in self.pairs:
            self.items.extend((rec["img_id"], s) for s in rec["sentences"])
            self.cut_off_points.append(len(self.items))
        self.multi_sentence_per_pair = True
        print(f"For {self.subset}, sentence number: {len(self.items)}")
        print(f"For {self.subset}, image number: {len(self.pairs)}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        img_id, cap = self.items[index]
        text, mask, segment = retrieval_text(self.tokenizer, cap, self.max_words)
        bef, aft = self._images(img_id)
        return text, mask, segment, bef, aft, np.ones(2, dtype=np.int64)


class SpotCaption(_SpotBase):
    """One item per pair with a sampled sentence: the 10-tuple of spec 3.3."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        print(f"Image number: {len(self.pairs)}")
        print(f"Total Paire: {len(self.pairs)}")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        rec = self.pairs[index]
        cap = self.sampler.rng(index).choice(rec["sentences"])
        text, mask, segment, in_ids, dec_mask, out_ids = caption_text(self.tokenizer, cap, self.max_words)
        bef, aft = self._images(rec["img_id"])
        return (text, mask, segment, bef, aft, np.ones(2, dtype=np.int64), in_ids, dec_mask, out_ids,
                f"{rec['img_id']}.png")
