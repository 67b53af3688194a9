"""Retrieval metrics (spec 5.5), caption scores through common.metrics, CLEVR per-change-type breakdown."""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np

from common.errors import InputError
from common.metrics.evaluate import resolve_metrics
from common.metrics.meteor import MeteorScorer


def _rank_metrics(ranks: np.ndarray, prefix: str = "") -> dict[str, float]:
    ranks = np.asarray(ranks, dtype=np.float64)
    return {
        f"{prefix}R1": float(np.mean(ranks < 1) * 100), f"{prefix}R5": float(np.mean(ranks < 5) * 100),
        f"{prefix}R10": float(np.mean(ranks < 10) * 100), f"{prefix}MR": float(np.median(ranks) + 1),
        f"{prefix}MeanR": float(np.mean(ranks) + 1),
    }


def group_similarity(sim: np.ndarray, cut_off_points: list[int]) -> np.ndarray:
    """(S,P) sentence-by-pair similarities -> (P, maxK, P), missing sentences padded with -inf."""
    starts = [0] + list(cut_off_points[:-1])
    max_k = max(e - s for s, e in zip(starts, cut_off_points))
    out = np.full((len(cut_off_points), max_k, sim.shape[1]), -np.inf)
    for p, (s, e) in enumerate(zip(starts, cut_off_points)):
        out[p, : e - s] = sim[s:e]
    return out


def _ranks_of_diagonal(x: np.ndarray, ties: str) -> np.ndarray:
    diag = np.diag(x)[:, None]
    if ties == "strict":
        return (x > diag).sum(axis=1)
    # The original's compute_metrics: every position equal to the diagonal counts (spec 9.17).
    sx = np.sort(-x, axis=1)
    return np.where(sx - (-diag) == 0)[1]


def retrieval_metrics(sim_grouped: np.ndarray, ties: str = "strict") -> dict[str, float]:
    """Text->pair and pair->text R@1/5/10, median and mean rank (pair->text keys get the `V2T$` prefix)."""
    if ties not in ("strict", "original"):
        raise ValueError("ties must be 'strict' or 'original'")
    num_pairs, max_k, _ = sim_grouped.shape
    t2v = []
    for p in range(num_pairs):
        for k in range(max_k):
            row = sim_grouped[p, k]
            if np.isinf(row).all():
                continue
            if ties == "strict":
                t2v.append(int((row > row[p]).sum()))
            else:
                order = np.argsort(-row, kind="stable")
                t2v.append(int(np.where(order == p)[0][0]))
    result = _rank_metrics(np.array(t2v))
    pair_text = sim_grouped.max(axis=1).T  # [pair, text group]
    result.update(_rank_metrics(_ranks_of_diagonal(pair_text, ties), prefix="V2T$"))
    return result


def references_from_gt(gt: dict, ids: list[str], gt_path: str = "gt") -> dict[str, list[str]]:
    """{image id: [captions]} for `ids` from a COCO GT dict; unknown ids are an error (COCO loadRes)."""
    refs: dict[str, list[str]] = {}
    for ann in gt.get("annotations", []):
        refs.setdefault(str(ann["image_id"]), []).append(ann["caption"])
    missing = [i for i in ids if i not in refs]
    if missing:
        raise InputError(gt_path, f"{len(missing)} hypothesis image ids are not in the GT (e.g. {missing[0]!r})",
                         field="annotations")
    return {i: refs[i] for i in ids}


def score_captions(hyps: dict[str, str], gt: dict, metrics: list[str] | None = None, gt_path: str = "gt",
                   meteor_scorer=None) -> dict:
    """coco-caption scores (Bleu_1..4, METEOR, ROUGE_L, CIDEr) of `hyps` against the GT, via common.metrics
    (METEOR through `meteor_scorer`, an open common.metrics.meteor.MeteorScorer, when given)."""
    from common.metrics import evaluate

    if not hyps:
        return {}
    refs = references_from_gt(gt, list(hyps), gt_path)
    return evaluate(refs, dict(hyps), metrics=metrics, meteor_scorer=meteor_scorer)


def clevr_breakdown(hyps: dict[str, str], gt: dict, type_mapping: dict[str, set[str]],
                    metrics: list[str] | None = None, gt_path: str = "gt") -> dict[str, dict]:
    """Scores for total, semantic-only, distractor-only (`_n` ids) and each change type, as RCC reports."""
    subsets = {
        "total": list(hyps),
        "semantic": [i for i in hyps if not i.endswith("_n")],
        "distractor": [i for i in hyps if i.endswith("_n")],
    }
    for kind, ids in type_mapping.items():
        subsets[kind] = [i for i in hyps if i in ids]
    # One METEOR JVM for all subsets (issue 15: one per subset took ~3 of 4 minutes per synthetic epoch).
    keys = resolve_metrics(metrics)
    with MeteorScorer() if "METEOR" in keys else contextlib.nullcontext() as scorer:
        return {name: score_captions({i: hyps[i] for i in ids}, gt, metrics, gt_path, scorer) if ids else {}
                for name, ids in subsets.items()}


def change_accuracy(hyps: dict[str, str], type_of: dict[str, str], classify: Callable[[str], str]) -> dict[str, float]:
    """Change/no-change accuracy over all pairs and change-type accuracy over changed pairs, with the
    majority-class baselines. `type_of[id]` is the true type ('none' for `_n` distractor ids)."""
    ids = [i for i in hyps if i in type_of]
    if not ids:
        return {}
    truth = [type_of[i] for i in ids]
    pred = [classify(hyps[i]) for i in ids]
    changed = [(t != "none") == (p != "none") for t, p in zip(truth, pred)]
    n_none = sum(t == "none" for t in truth)
    out = {"change_acc": float(np.mean(changed)),
           "change_acc_majority": max(n_none, len(truth) - n_none) / len(truth)}
    sem = [(t, p) for t, p in zip(truth, pred) if t != "none"]
    if sem:
        counts = {}
        for t, _ in sem:
            counts[t] = counts.get(t, 0) + 1
        out["type_acc"] = float(np.mean([t == p for t, p in sem]))
        out["type_acc_majority"] = max(counts.values()) / len(sem)
    return out
