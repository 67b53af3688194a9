"""Helpers shared by the loaders: JSON reading with one-line errors, sampling RNG, COCO GT layout."""
from __future__ import annotations

import json
import random
from pathlib import Path

from common.errors import InputError

GT_INFO = {"contributor": "dummy", "date_created": "dummy", "description": "dummy", "url": "dummy",
           "version": "dummy", "year": "dummy"}


def read_json(path: str | Path):
    """Parsed JSON of `path`; missing or malformed files raise InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise InputError(path, f"invalid JSON: {err.msg} (line {err.lineno})") from None


def coco_gt(images: list[str], annotations: list[tuple[str, str]]) -> dict:
    """COCO-caption GT dict in the original's key order (spec 3.4)."""
    return {
        "info": dict(GT_INFO),
        "licenses": dict(GT_INFO),
        "type": "captions",
        "images": [{"filename": i, "id": i} for i in images],
        "annotations": [{"caption": c, "id": n, "image_id": i} for n, (i, c) in enumerate(annotations)],
    }


class Sampler:
    """Caption choice: the global `random` (original, depends on worker count; spec 9.24) or a
    per-(seed, epoch, index) RNG when `per_index` is set."""

    def __init__(self, per_index: bool = False, seed: int = 0):
        self.per_index, self.seed, self.epoch = per_index, seed, 0

    def rng(self, index: int) -> random.Random:
        """RNG to use for item `index`."""
        if self.per_index:
            return random.Random((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
        return random  # type: ignore[return-value]
