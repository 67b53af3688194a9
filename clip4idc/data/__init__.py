"""Loaders of CLEVR-Change, Spot-the-Diff and Image Editing Request (spec 3)."""
from __future__ import annotations

from clip4idc.data.clevr import ClevrCaption, ClevrChange, ClevrRetrieval
from clip4idc.data.common import Sampler
from clip4idc.data.ier import IerCaption, IerRetrieval
from clip4idc.data.spot import SpotCaption, SpotRetrieval

DATATYPES = ("clevr", "spot", "ier")


def build_dataset(datatype: str, task: str, subset: str, data_path, features_path, tokenizer, max_words: int,
                  image_resolution: int, sampler: Sampler | None = None, skip_missing: bool = False):
    """Dataset of `datatype` ('clevr'|'spot'|'ier') for `task` ('retrieval'|'caption') and split `subset`;
    `skip_missing`: CLEVR scenes without images are left out (listed in the dataset's `skipped`)."""
    if datatype == "clevr":
        cls = ClevrRetrieval if task == "retrieval" else ClevrCaption
        return cls(data_path, subset, tokenizer, max_words, image_resolution, sampler, skip_missing)
    if datatype == "spot":
        cls = SpotRetrieval if task == "retrieval" else SpotCaption
    elif datatype == "ier":
        cls = IerRetrieval if task == "retrieval" else IerCaption
    else:
        raise ValueError(f"--datatype must be one of {DATATYPES}, got {datatype!r}")
    return cls(data_path, features_path, subset, tokenizer, max_words, image_resolution, sampler)


__all__ = ["build_dataset", "DATATYPES", "Sampler", "ClevrChange", "ClevrCaption", "ClevrRetrieval",
           "SpotCaption", "SpotRetrieval", "IerCaption", "IerRetrieval"]
