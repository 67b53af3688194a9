"""Helpers shared by the loaders: JSON reading with one-line errors, sampling RNG, COCO GT layout, and a
DataLoader that carries item errors out of its workers."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset, default_collate

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


@dataclass
class ItemError:
    """An InputError raised while loading an item, carried out of a DataLoader worker as data: the
    DataLoader re-raises worker exceptions as a multi-line RuntimeError, not as the InputError."""

    file: str
    message: str
    record: Any = None
    field: str | None = None

    def error(self) -> InputError:
        """The InputError to raise in the main process."""
        return InputError(self.file, self.message, record=self.record, field=self.field)


class _CarryErrors(Dataset):
    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return self.dataset[index]
        except InputError as err:
            return ItemError(err.file, err.message, err.record, err.field)


def _collate_or_error(items: list):
    for item in items:
        if isinstance(item, ItemError):
            return item
    return default_collate(items)


class ItemLoader(DataLoader):
    """A DataLoader whose item errors (an unreadable image, ...) surface as the one-line InputError in the
    main process, whatever the number of workers. Never substitutes another item (issue 11)."""

    def __init__(self, dataset: Dataset, **kwargs):
        super().__init__(_CarryErrors(dataset), collate_fn=_collate_or_error, **kwargs)

    def __iter__(self):
        for batch in super().__iter__():
            if isinstance(batch, ItemError):
                raise batch.error()
            yield batch
