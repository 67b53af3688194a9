"""Caption encodings of the loaders (spec 3.3)."""
from __future__ import annotations

import numpy as np

from clip4idc.tokenizer import EOT_ID, SOT_ID, ClipTokenizer


def retrieval_text(tokenizer: ClipTokenizer, caption: str, max_words: int) -> tuple[np.ndarray, ...]:
    """(ids, mask, segment) of `[SOT] + bpe[:max_words-2] + [EOT]` zero-padded, each (1, max_words) int64."""
    ids = [SOT_ID] + tokenizer.encode(caption)[: max_words - 2] + [EOT_ID]
    out = np.zeros((3, 1, max_words), dtype=np.int64)
    out[0, 0, : len(ids)] = ids
    out[1, 0, : len(ids)] = 1
    return out[0], out[1], out[2]


def caption_text(tokenizer: ClipTokenizer, caption: str, max_words: int) -> tuple[np.ndarray, ...]:
    """(pairs_text, pairs_mask, pairs_segment, in_ids, dec_mask, out_ids), each (1, max_words) int64.

    The text-encoder input is just [SOT, EOT]; in_ids = [SOT] + words, out_ids = words + [EOT] with
    words = bpe[:max_words-1].
    """
    words = tokenizer.encode(caption)[: max_words - 1]
    out = np.zeros((6, 1, max_words), dtype=np.int64)
    out[0, 0, :2] = [SOT_ID, EOT_ID]
    out[1, 0, :2] = 1
    out[3, 0, : len(words) + 1] = [SOT_ID] + words
    out[4, 0, : len(words) + 1] = 1
    out[5, 0, : len(words) + 1] = words + [EOT_ID]
    return tuple(out)
