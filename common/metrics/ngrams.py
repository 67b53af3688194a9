"""Vectorised n-gram tables: every distinct (sentence, n-gram) with its count, for a batch of sentences.

Words are mapped to integer ids, n-grams of order k to dense ids built from the (k-1)-gram id and the
next word id (exact, no hashing), all with numpy. BLEU and CIDEr are computed from these tables.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from operator import methodcaller

import numpy as np


@dataclass
class OrderTable:
    """Distinct (sentence, k-gram) pairs of one order k, sorted by sentence then gram id."""

    sent: np.ndarray  # int64 sentence index
    gram: np.ndarray  # int64 dense gram id in [0, n_grams)
    count: np.ndarray  # int64 term frequency of the gram in the sentence
    n_grams: int
    first_pos: np.ndarray  # for each gram id, a position in the flat word array where it starts


@dataclass
class NgramTable:
    """All orders 1..n for a batch of whitespace-split sentences."""

    lengths: np.ndarray  # words per sentence
    orders: list[OrderTable]
    words: list[str]  # flat list of the words (for turning gram ids back into tuples)

    def gram_tuple(self, order: int, gram_id: int) -> tuple[str, ...]:
        """The words of gram ``gram_id`` of order ``order`` (1-based)."""
        p = int(self.orders[order - 1].first_pos[gram_id])
        return tuple(self.words[p:p + order])


def joined_sentences(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> list[str]:
    """Hypotheses followed by all references flattened: the sentence order BLEU and CIDEr tables use."""
    out = list(hypotheses)
    for refs in references:
        out.extend(refs)
    return out


def build_table(sentences: Sequence[str], n: int = 4, split: str | None = None) -> NgramTable:
    """N-gram table of orders 1..n; sentences are split with ``str.split(split)``."""
    splits = list(map(methodcaller("split", split), sentences))
    lengths = np.fromiter(map(len, splits), dtype=np.int64, count=len(splits))
    words = list(chain.from_iterable(splits))
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = np.array(list(map(vocab.__getitem__, words)), dtype=np.int64)
    v = max(len(vocab), 1)
    sent_of = np.repeat(np.arange(len(sentences), dtype=np.int64), lengths)
    total = len(words)
    orders: list[OrderTable] = []
    starts = np.arange(total, dtype=np.int64)
    gid = tok
    for k in range(1, n + 1):
        if k == 1:
            codes = tok
        else:
            keep = starts + (k - 1) < total
            starts, prev = starts[keep], gid[keep]
            keep = sent_of[np.minimum(starts + (k - 1), max(total - 1, 0))] == sent_of[starts]
            starts, prev = starts[keep], prev[keep]
            codes = prev * v + tok[starts + (k - 1)]
        uniq, gid = np.unique(codes, return_inverse=True)
        gid = gid.reshape(-1).astype(np.int64)
        g = max(len(uniq), 1)
        first_pos = np.empty(len(uniq), dtype=np.int64)
        first_pos[gid] = starts
        key = sent_of[starts] * g + gid
        ukey, cnt = np.unique(key, return_counts=True)
        orders.append(OrderTable(ukey // g, ukey % g, cnt.astype(np.int64), len(uniq), first_pos))
    return NgramTable(lengths, orders, words)
