"""ROUGE-L exactly as coco-caption's ``Rouge`` (beta = 1.2), with a bit-parallel LCS.

Per item: LCS with each reference (sentences split on single spaces, as the original does, so an empty
sentence is one empty token), precision and recall maxed separately over the references, combined as
``(1 + b^2) P R / (R + b^2 P)``; the corpus score is the mean over items.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BETA = 1.2


def lcs_length(a: Sequence[str], masks: dict[str, int], m: int) -> int:
    """LCS length of token list ``a`` and a sentence of m tokens given as per-token position bit masks."""
    full = (1 << m) - 1
    v = full
    for tok in a:
        mask = masks.get(tok)
        if mask:
            u = v & mask
            v = ((v + u) | (v - u)) & full
    return m - v.bit_count()


def rouge_l(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, np.ndarray]:
    """(mean ROUGE-L, per-item array) for tokenised hypotheses and their reference lists."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    b2 = BETA**2
    scores = np.zeros(len(hypotheses), dtype=np.float64)
    for i, (hyp, refs) in enumerate(zip(hypotheses, references)):
        if not refs:
            raise ValueError("every item needs at least one reference")
        tc = hyp.split(" ")
        m = len(tc)
        masks: dict[str, int] = {}
        for j, t in enumerate(tc):
            masks[t] = masks.get(t, 0) | (1 << j)
        prec_max = rec_max = 0.0
        for ref in refs:
            tr = ref.split(" ")
            lcs = lcs_length(tr, masks, m)
            p = lcs / float(m)
            r = lcs / float(len(tr))
            if p > prec_max:
                prec_max = p
            if r > rec_max:
                rec_max = r
        if prec_max != 0 and rec_max != 0:
            scores[i] = ((1 + b2) * prec_max * rec_max) / float(rec_max + b2 * prec_max)
    mean = float(np.mean(scores)) if len(scores) else 0.0
    return mean, scores
