"""BLEU-1..4 exactly as coco-caption's ``Bleu(4)`` (option='closest'), vectorised with numpy.

Corpus score: clipped n-gram matches and guesses summed over items, brevity penalty from the summed
hypothesis length against the summed "closest" reference lengths (ties -> the shorter reference),
with coco-caption's smoothing constants (tiny = 1e-15, small = 1e-9). Per-item scores are coco-caption's
per-image ``bleu_list`` (cumulative product, k-th root, per-item brevity penalty).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from common.metrics.ngrams import NgramTable, build_table, joined_sentences

TINY = 1e-15
SMALL = 1e-9


def bleu(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], n: int = 4, table: NgramTable | None = None
) -> tuple[list[float], np.ndarray]:
    """(corpus Bleu_1..n, per-item array (n, items)) for tokenised hypotheses and their reference lists.

    ``table``: a prebuilt ``build_table(hypotheses + flattened references, n)`` to share with CIDEr.
    """
    items = len(hypotheses)
    if items != len(references):
        raise ValueError(f"{items} hypotheses but {len(references)} reference lists")
    nref = np.fromiter((len(r) for r in references), dtype=np.int64, count=items)
    if items and nref.min() < 1:
        raise ValueError("every item needs at least one reference")
    if table is None:
        table = build_table(joined_sentences(hypotheses, references), n)
    ref_item = np.repeat(np.arange(items, dtype=np.int64), nref)
    testlen = table.lengths[:items]
    reflens = table.lengths[items:]

    # "closest" reference length: min over refs of (|l - testlen|, l)
    if items:
        big = int(reflens.max(initial=0)) + 1
        key = np.abs(reflens - testlen[ref_item]) * big + reflens
        starts = np.concatenate([[0], np.cumsum(nref)[:-1]])
        reflen = np.minimum.reduceat(key, starts) % big
    else:
        reflen = np.zeros(0, dtype=np.int64)

    correct = np.zeros((n, items), dtype=np.int64)
    guess = np.zeros((n, items), dtype=np.int64)
    for k in range(n):
        guess[k] = np.maximum(0, testlen - k)
        o = table.orders[k]
        is_hyp = o.sent < items
        # max count of each gram over the item's references; entries are sorted by gram then sentence and
        # ref_item grows with the sentence index, so these keys are already sorted
        rkey = o.gram[~is_hyp] * max(items, 1) + ref_item[o.sent[~is_hyp] - items]
        rcnt = o.count[~is_hyp]
        if len(rkey):
            first = np.flatnonzero(np.concatenate([[True], rkey[1:] != rkey[:-1]]))
            ukey, maxcnt = rkey[first], np.maximum.reduceat(rcnt, first)
        else:
            ukey, maxcnt = rkey, rcnt
        hkey = o.gram[is_hyp] * max(items, 1) + o.sent[is_hyp]
        hcnt = o.count[is_hyp]
        pos = np.searchsorted(ukey, hkey)
        pos_c = np.minimum(pos, max(len(ukey) - 1, 0))
        found = (pos < len(ukey)) & (ukey[pos_c] == hkey) if len(ukey) else np.zeros(len(hkey), bool)
        clipped = np.where(found, np.minimum(hcnt, maxcnt[pos_c] if len(ukey) else 0), 0)
        correct[k] = np.bincount(o.sent[is_hyp], weights=clipped, minlength=items)[:items].astype(np.int64)

    # per-item scores (coco-caption's bleu_list)
    per_item = np.zeros((n, items), dtype=np.float64)
    acc = np.ones(items, dtype=np.float64)
    for k in range(n):
        acc = acc * ((correct[k].astype(np.float64) + TINY) / (guess[k].astype(np.float64) + SMALL))
        per_item[k] = acc ** (1.0 / (k + 1))
    ratio = (testlen + TINY) / (reflen + SMALL)
    short = ratio < 1
    if short.any():
        per_item[:, short] *= np.exp(1 - 1 / ratio[short])

    # corpus score
    total_test, total_ref = int(testlen.sum()), int(reflen.sum())
    scores: list[float] = []
    b = 1.0
    for k in range(n):
        b *= float(int(correct[k].sum()) + TINY) / (int(guess[k].sum()) + SMALL)
        scores.append(b ** (1.0 / (k + 1)))
    r = (total_test + TINY) / (total_ref + SMALL)
    if r < 1:
        scores = [s * math.exp(1 - 1 / r) for s in scores]
    return scores, per_item
