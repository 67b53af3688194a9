"""Self-critical sequence training reward (spec 4.7): CIDEr-D (+ optional BLEU-4) of samples minus the greedy baseline."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from common.errors import InputError
from spatial_captioning.captions import reward_string


def resolve_cached_tokens(cached_tokens: str, data_dir: str = "data") -> Path:
    """Find the document-frequency pickle: a full path, <name>.p, or data/<name>.p as the original (spec 9.14)."""
    candidates = [Path(cached_tokens), Path(f"{cached_tokens}.p"), Path(data_dir) / f"{cached_tokens}.p",
                  Path(data_dir) / cached_tokens]
    for path in candidates:
        if path.is_file():
            return path
    raise InputError(cached_tokens, "CIDEr-D document-frequency pickle not found (looked at "
                     + ", ".join(str(c) for c in candidates)
                     + "); create it with scripts/prepro_ngrams.py --split train", field="cached_tokens")


def load_cider_scorer(cached_tokens: str, data_dir: str = "data", trust: bool = False) -> Any:
    """common.metrics.CiderD on the training-set document frequencies; checked when training starts (spec 8).

    The prepro_ngrams pickle is read with common.safe_pickle (py2 latin1 pickles included); full unpickling
    only with `trust` (--trust_checkpoint).
    """
    from collections.abc import Mapping

    from common.metrics import CiderD
    from common.safe_pickle import load_pickle

    path = resolve_cached_tokens(cached_tokens, data_dir)
    data = load_pickle(path, trust=trust)
    if not isinstance(data, Mapping) or "document_frequency" not in data or "ref_len" not in data:
        raise InputError(path, "not a prepro_ngrams pickle: expected a dict with 'document_frequency' and 'ref_len'",
                         field="document_frequency")
    df = data["document_frequency"]
    if not isinstance(df, Mapping) or not df:
        raise InputError(path, "must be a non-empty mapping of n-gram tuples to counts", field="document_frequency")
    try:
        ref_len = float(data["ref_len"])
    except (TypeError, ValueError):
        raise InputError(path, f"{data['ref_len']!r} is not a number", field="ref_len") from None
    if not np.isfinite(ref_len) or ref_len < 1:
        raise InputError(path, f"{ref_len} is not a positive image count", field="ref_len")
    print(f"{path}: ref_len {ref_len:.0f}, {len(df)} n-grams")
    return CiderD(df=df, ref_len=float(np.log(ref_len)))


def bleu4_per_candidate(candidates: list[str], references: list[list[str]]) -> np.ndarray:
    """Sentence-level BLEU-4 of each candidate (pycocoevalcap Bleu, as the original's reward)."""
    from pycocoevalcap.bleu.bleu import Bleu

    res = {i: [c] for i, c in enumerate(candidates)}
    gts = {i: refs for i, refs in enumerate(references)}
    _, scores = Bleu(4).compute_score(gts, res, verbose=0)
    return np.asarray(scores[3], dtype=np.float64)


def self_critical_reward(gen_result: Any, greedy_res: Any, gts: Sequence[np.ndarray], seq_per_img: int,
                         cider_scorer: Any, cider_weight: float = 1.0, bleu_weight: float = 0.0,
                         bleu_fn: Callable[[list[str], list[list[str]]], np.ndarray] = bleu4_per_candidate,
                         ) -> tuple[np.ndarray, dict[str, float]]:
    """Rewards (N, T) = score(sample_i) - score(greedy_i) broadcast over T, and the mean scores.

    Row i of gen_result/greedy_res belongs to image i // seq_per_img; strings keep the EOS '0' (spec 9.15).
    """
    gen = np.asarray(gen_result)
    greedy = np.asarray(greedy_res)
    n = gen.shape[0]
    candidates = [reward_string(r) for r in gen] + [reward_string(r) for r in greedy]
    refs_per_image = [[reward_string(r) for r in np.asarray(g)] for g in gts]
    references = [refs_per_image[(i % n) // seq_per_img] for i in range(2 * n)]
    stats: dict[str, float] = {}
    scores = np.zeros(2 * n)
    if cider_weight > 0:
        _, cider = cider_scorer.compute_score(candidates, references)
        cider = np.asarray(cider, dtype=np.float64)
        stats["cider"] = float(cider.mean())
        stats["sample_cider"] = float(cider[:n].mean())
        stats["greedy_cider"] = float(cider[n:].mean())
        scores = scores + cider_weight * cider
    if bleu_weight > 0:
        bleu = bleu_fn(candidates, references)
        stats["bleu"] = float(bleu.mean())
        scores = scores + bleu_weight * bleu
    reward = scores[:n] - scores[n:]
    stats["avg_reward"] = float(reward.mean())
    return np.repeat(reward[:, None], gen.shape[1], 1), stats
