"""The three evaluation tasks (spec 5): set abstraction, set completion (Spearman), odd-one-out,
plus the baselines they are compared with (majority label, feature mean, chance)."""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from scipy.stats import spearmanr

from set_abstraction.data import CachedOutlierDataset, CachedRankingDataset, HumanRecord
from set_abstraction.model import AbstractionEmbeddingModule, cosine_distance

OUTLIER_SIZES = (3, 4, 5)


def accuracy(output: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1,)) -> list[float]:
    """Percent of (set, subset) positions whose true node is in the top-k logits; output [B, C, P], target [B, P].

    Spec 9.19 (K): the denominator is B*P (every position), not B.
    """
    maxk = max(topk)
    if output.shape[1] < maxk:
        raise ValueError(f"top-{maxk} accuracy needs at least {maxk} classes, got {output.shape[1]}")
    pred = output.topk(maxk, dim=1).indices  # [B, k, P]
    correct = pred.eq(target.unsqueeze(1))
    total = target.numel()
    return [correct[:, :k].sum().item() * 100.0 / total for k in topk]


def size_slices(subsets: Sequence[tuple[int, ...]]) -> dict[int, slice]:
    """Positions of each subset size in the model output (spec 9.9 F: from the actual subsets)."""
    out: dict[int, slice] = {}
    for i, S in enumerate(subsets):
        s = len(S)
        out[s] = slice(out[s].start, i + 1) if s in out else slice(i, i + 1)
    return out


def abstraction_metrics(logits: torch.Tensor, labels: torch.Tensor,
                        subsets: Sequence[tuple[int, ...]]) -> dict[str, float]:
    """top1/top5@abstr over all positions and per subset size (``top1@abstr_<size>``)."""
    k5 = min(5, logits.shape[1])
    out = {}
    out["top1@abstr"], out["top5@abstr"] = accuracy(logits, labels, (1, k5))
    for size, sl in size_slices(subsets).items():
        out[f"top1@abstr_{size}"], out[f"top5@abstr_{size}"] = accuracy(logits[..., sl], labels[..., sl], (1, k5))
    return out


def majority_baseline(train_labels: torch.Tensor, val_labels: torch.Tensor,
                      subsets: Sequence[tuple[int, ...]]) -> dict[str, float]:
    """Accuracy of predicting, per subset size, the most frequent training label (``top1@abstr_<size>``)."""
    out = {}
    correct_all = 0
    for size, sl in size_slices(subsets).items():
        majority = Counter(train_labels[:, sl].flatten().tolist()).most_common(1)[0][0]
        hits = (val_labels[:, sl] == majority)
        correct_all += hits.sum().item()
        out[f"top1@abstr_{size}"] = hits.float().mean().item() * 100.0
    out["top1@abstr"] = correct_all * 100.0 / val_labels.numel()
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (scipy, average ranks for ties); NaN when either side is constant."""
    if np.ptp(np.asarray(a, dtype=float)) == 0 or np.ptp(np.asarray(b, dtype=float)) == 0:
        return float("nan")
    return float(spearmanr(a, b).correlation)


def summarise_rank_correlations(records: Sequence[HumanRecord], predicted: Sequence[Sequence[float]]) -> dict:
    """Per-key and overall mean Spearman of predicted vs ground-truth query distances.

    Spec 9.11 (F): NaN correlations (constant distances) are left out of the means (nanmean) and
    counted, instead of poisoning the mean as the original ``np.mean`` did.
    """
    per_key: dict[str, list[float]] = defaultdict(list)
    for rec, dist in zip(records, predicted, strict=True):
        per_key[rec.key].append(spearman(rec.query_dists, list(dist)))
    everything = [c for cs in per_key.values() for c in cs]

    def _mean(values: list[float]) -> float:
        finite = [v for v in values if not math.isnan(v)]
        return float(np.mean(finite)) if finite else float("nan")

    return {
        "per_key": {k: _mean(v) for k, v in per_key.items()},
        "counts": {k: len(v) for k, v in per_key.items()},
        "overall": _mean(everything),
        "nan_count": sum(math.isnan(v) for v in everything),
        "nan_policy": "nanmean (NaN correlations from constant distances are skipped and counted)",
    }


@torch.no_grad()
def evaluate_ranking(model: AbstractionEmbeddingModule, dataset: CachedRankingDataset,
                     device: torch.device | str = "cpu", progress: Iterable | None = None) -> dict:
    """Set completion: Spearman between model.rank distances and the human-set ground truth."""
    model.eval()
    predicted = []
    indices = progress if progress is not None else range(len(dataset))
    for i in indices:
        ref, query = dataset[i]
        dist = model.rank(ref.unsqueeze(0).to(device), query.unsqueeze(0).to(device))
        predicted.append(dist[0].cpu().tolist())
    return summarise_rank_correlations(dataset.records, predicted)


def rank_baseline(ref: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Feature-mean baseline: cosine distance of each raw query feature to the mean reference feature."""
    return cosine_distance(ref.mean(dim=-2, keepdim=True), query)


def evaluate_ranking_baseline(dataset: CachedRankingDataset) -> dict:
    """Set completion with the raw-feature mean baseline."""
    predicted = [rank_baseline(*dataset[i]).tolist() for i in range(len(dataset))]
    return summarise_rank_correlations(dataset.records, predicted)


def find_outlier_baseline(x: torch.Tensor) -> torch.Tensor:
    """Feature-mean baseline: cosine distance of each member to the mean of the set ([n, D] -> [n])."""
    return cosine_distance(x.mean(dim=-2, keepdim=True), x)


def summarise_outliers(sizes: Sequence[int], dists: Sequence[torch.Tensor], targets: Sequence[int]) -> dict:
    """Top-1/top-2 accuracy (percent) of "the outlier has the largest distance", per total set size."""
    hits: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for n, dist, target in zip(sizes, dists, targets, strict=True):
        order = torch.as_tensor(dist).argsort(descending=True).tolist()
        hits[n].append((100.0 * (order[0] == target), 100.0 * (target in order[:2])))
    return {n: {"top1": float(np.mean([h[0] for h in hits[n]])), "top2": float(np.mean([h[1] for h in hits[n]])),
                "count": len(hits[n])} for n in sorted(hits)}


@torch.no_grad()
def evaluate_outlier(model: AbstractionEmbeddingModule, dataset: CachedOutlierDataset,
                     device: torch.device | str = "cpu", progress: Iterable | None = None) -> dict:
    """Odd-one-out: the member with the largest distance to the set abstraction is the prediction."""
    model.eval()
    sizes, dists, targets = [], [], []
    indices = progress if progress is not None else range(len(dataset))
    for i in indices:
        x, target = dataset[i]
        dist, _ = model.find_outlier(x.unsqueeze(0).to(device))
        sizes.append(x.shape[0])
        dists.append(dist[0].cpu())
        targets.append(int(target))
    return summarise_outliers(sizes, dists, targets)


def evaluate_outlier_baseline(dataset: CachedOutlierDataset) -> dict:
    """Odd-one-out with the raw-feature mean baseline."""
    sizes, dists, targets = [], [], []
    for i in range(len(dataset)):
        x, target = dataset[i]
        sizes.append(x.shape[0])
        dists.append(find_outlier_baseline(x))
        targets.append(int(target))
    return summarise_outliers(sizes, dists, targets)


def chance_outlier(n: int) -> dict[str, float]:
    """Chance top-1 / top-2 accuracy (percent) for a set of n."""
    return {"top1": 100.0 / n, "top2": 200.0 / n}


def format_summary(meters: dict[str, float], ranking: dict, outlier: dict) -> str:
    """The original ``_summary.txt`` text (spec 2.5)."""
    lines = ["-----Evaluation is finished------"]
    for name, value in meters.items():
        if name.startswith("top"):
            lines.append(f"{name} {value:.3f}")
    for key, value in ranking["per_key"].items():
        lines.append(f"Avg Rank Correlation (N={key}): {value:.4f}")
    lines.append(f"Overall Avg Rank Correlation: {ranking['overall']}")
    for n in OUTLIER_SIZES:
        if n in outlier:
            lines.append(f"N = {n} Acc@1 ({outlier[n]['top1']:.3f}) Acc@2  ({outlier[n]['top2']:.3f})")
    return "\n".join(lines) + "\n"
