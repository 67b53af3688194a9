"""CLEVR-Change (`--datatype clevr`, spec 3.1): retrieval and caption datasets, GT builder, change types."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from torch.utils.data import Dataset

from common.errors import InputError
from clip4idc.data.common import Sampler, coco_gt, read_json
from clip4idc.data.images import load_image
from clip4idc.data.text import caption_text, retrieval_text
from clip4idc.tokenizer import ClipTokenizer

CHANGE_TYPES = ("color", "material", "add", "drop", "move")


def _caption_table(path: Path) -> dict[str, list[str]]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(path, "expected an object {image file name: [captions]}")
    for key, value in data.items():
        if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
            raise InputError(path, "expected a non-empty list of strings", record=key)
    return data


class ClevrChange:
    """The files of one CLEVR-Change root (`--data_path`)."""

    def __init__(self, data_path: str | Path, skip_missing: bool = False):
        self.root, self.skip_missing = Path(data_path), skip_missing
        self.skipped: dict[str, list[int]] = {}
        for sub in ("images", "sc_images", "nsc_images"):
            if not (self.root / sub).is_dir():
                raise InputError(self.root / sub, "directory not found (expected the CLEVR-Change layout)")
        splits = read_json(self.root / "splits.json")
        if not isinstance(splits, dict):
            raise InputError(self.root / "splits.json", "expected {split: [int, ...]}")
        for name, ids in splits.items():
            if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                raise InputError(self.root / "splits.json", "expected a list of integer scene ids", field=name)
        self.splits = splits
        self.change = _caption_table(self.root / "change_captions.json")
        self.no_change = _caption_table(self.root / "no_change_captions.json")
        self._files = {}
        for name in os.listdir(self.root / "images"):
            stem = Path(name).stem
            suffix = stem.rsplit("_", 1)[-1]
            if suffix.isdigit():
                self._files[int(suffix)] = suffix

    def scene_ids(self, subset: str) -> list[str]:
        """6-digit id strings of a split, in splits.json order. A listed scene without its before image is
        an error; with `skip_missing` it is left out, as the original does, and kept in `skipped[subset]`."""
        if subset not in self.splits:
            raise InputError(self.root / "splits.json", f"split {subset!r} missing", field=subset)
        missing = [i for i in self.splits[subset] if i not in self._files]
        if missing and not self.skip_missing:
            raise InputError(self.root / "images", f"{len(missing)} scenes of the {subset} split have no before image "
                             f"(e.g. CLEVR_default_{missing[0]:06d}.png); pass --skip_missing_images to leave them "
                             "out as the original does", field=subset)
        self.skipped[subset] = missing
        ids = [self._files[i] for i in self.splits[subset] if i in self._files]
        for sid in ids:
            key = f"CLEVR_default_{sid}.png"
            if key not in self.change:
                raise InputError(self.root / "change_captions.json", "no captions for this image", record=key)
            if key not in self.no_change:
                raise InputError(self.root / "no_change_captions.json", "no captions for this image", record=key)
        return ids

    def paths(self, sid: str) -> tuple[Path, Path, Path]:
        """(before, semantic-change after, distractor) image paths of a scene."""
        return (self.root / "images" / f"CLEVR_default_{sid}.png",
                self.root / "sc_images" / f"CLEVR_semantic_{sid}.png",
                self.root / "nsc_images" / f"CLEVR_nonsemantic_{sid}.png")

    def type_mapping(self) -> dict[str, set[str]]:
        """{change type: {'000123.png', ...}} from type_mapping.json (RCC format)."""
        path = self.root / "type_mapping.json"
        data = read_json(path)
        if not isinstance(data, dict):
            raise InputError(path, "expected {type: [\"000123.png\", ...]}")
        out = {}
        for name, items in data.items():
            if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
                raise InputError(path, "expected a list of image ids", field=name)
            out[name] = set(items)
        return out

    def gt(self) -> dict:
        """The merged GT of RCC `merge_gt_files`: change captions of all scenes, then no-change ones (`_n`)."""
        images, anns = [], []
        for key, caps in self.change.items():
            iid = key.split("_")[-1]
            images.append(iid)
            anns.extend((iid, c) for c in caps)
        for key, caps in self.no_change.items():
            iid = key.split("_")[-1] + "_n"
            images.append(iid)
            anns.extend((iid, c) for c in caps)
        return coco_gt(images, anns)


class ClevrRetrieval(Dataset):
    """One item per change caption: (text, mask, segment, bef, aft, image_mask); train swaps in the
    distractor as 'before' with probability 0.5 (spec 3.1)."""

    def __init__(self, data_path, subset: str, tokenizer: ClipTokenizer, max_words: int = 32,
                 image_resolution: int = 224, sampler: Sampler | None = None, skip_missing: bool = False):
        self.data = ClevrChange(data_path, skip_missing)
        self.subset, self.tokenizer, self.max_words, self.size = subset, tokenizer, max_words, image_resolution
        self.sampler = sampler or Sampler()
        self.scenes = self.data.scene_ids(subset)
        self.skipped = self.data.skipped[subset]
        self.items, self.cut_off_points = [], []
        for sid in self.scenes:
            for cap in self.data.change[f"CLEVR_default_{sid}.png"]:
                self.items.append((sid, cap))
            self.cut_off_points.append(len(self.items))
        print(f"For {subset}, sentence number: {len(self.items)}")
        print(f"For {subset}, image number: {len(self.scenes)}")
        self.multi_sentence_per_pair = True

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        sid, cap = self.items[index]
        text, mask, segment = retrieval_text(self.tokenizer, cap, self.max_words)
        bef, sc, nsc = self.data.paths(sid)
        if self.subset == "train" and self.sampler.rng(index).random() < 0.5:
            bef = nsc
        return text, mask, segment, load_image(bef, self.size), load_image(sc, self.size), np.ones(2, dtype=np.int64)


class ClevrCaption(Dataset):
    """One item per scene: the 14-tuple of spec 3.3 with a sampled change and no-change caption."""

    def __init__(self, data_path, subset: str, tokenizer: ClipTokenizer, max_words: int = 32,
                 image_resolution: int = 224, sampler: Sampler | None = None, skip_missing: bool = False):
        self.data = ClevrChange(data_path, skip_missing)
        self.subset, self.tokenizer, self.max_words, self.size = subset, tokenizer, max_words, image_resolution
        self.sampler = sampler or Sampler()
        self.scenes = self.data.scene_ids(subset)
        self.skipped = self.data.skipped[subset]
        print(f"Image number: {len(self.scenes)}")
        print(f"Total Paire: {len(self.scenes)}")

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int):
        sid = self.scenes[index]
        key = f"CLEVR_default_{sid}.png"
        rng = self.sampler.rng(index)
        cap = rng.choice(self.data.change[key])
        no_cap = rng.choice(self.data.no_change[key])
        text, mask, segment, in_ids, dec_mask, out_ids = caption_text(self.tokenizer, cap, self.max_words)
        _, _, _, no_in, no_mask, no_out = caption_text(self.tokenizer, no_cap, self.max_words)
        bef, sc, nsc = (load_image(p, self.size) for p in self.data.paths(sid))
        return (text, mask, segment, bef, sc, nsc, np.ones(2, dtype=np.int64), in_ids, dec_mask, out_ids,
                no_in, no_mask, no_out, f"{sid}.png")
