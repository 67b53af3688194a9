"""Metric semantics: accuracy over B*P, Spearman summaries and log lines, odd-one-out scoring, legacy LR."""
from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import spearmanr

from set_abstraction import schedule, tasks
from set_abstraction.data import HumanRecord
from set_abstraction.model import canonical_subsets


def test_accuracy_denominator_is_positions_and_topk_over_node_dim():
    # B=2 sets, C=6 nodes, P=3 positions
    logits = torch.zeros(2, 6, 3)
    target = torch.tensor([[0, 1, 2], [3, 4, 5]])
    for b in range(2):
        for p in range(3):
            logits[b, target[b, p], p] = 1.0 if (b, p) != (1, 2) else 0.5
    logits[1, 0, 2] = 0.9  # the true node 5 at (1, 2) is second
    top1, top2 = tasks.accuracy(logits, target, (1, 2))
    assert top1 == pytest.approx(5 * 100 / 6) and top2 == pytest.approx(100.0)
    with pytest.raises(ValueError):
        tasks.accuracy(torch.zeros(1, 3, 2), torch.zeros(1, 2, dtype=torch.long), (5,))


def test_size_slices_from_actual_subsets():
    assert tasks.size_slices(canonical_subsets(4)) == {1: slice(0, 4), 2: slice(4, 10), 3: slice(10, 14),
                                                       4: slice(14, 15)}
    assert tasks.size_slices(canonical_subsets(4, min_size=4)) == {4: slice(0, 1)}  # offset 14, not 15


def _records(dists_by_key):
    return [HumanRecord(key=k, reference=["a"] * int(k), query=list("vwxyz"), query_dists=d)
            for k, ds in dists_by_key.items() for d in ds]


def test_spearman_summary_and_log_lines():
    records = _records({"2": [[0.1, 0.5, 0.3, 0.9, 0.2], [1, 2, 3, 4, 5]], "3": [[5, 4, 3, 2, 1]]})
    predicted = [[0.2, 0.4, 0.3, 0.8, 0.1], [1, 2, 3, 5, 4], [1, 2, 3, 4, 5]]
    out = tasks.summarise_rank_correlations(records, predicted)
    r = [spearmanr(a.query_dists, b).correlation for a, b in zip(records, predicted)]
    assert out["per_key"]["2"] == pytest.approx((r[0] + r[1]) / 2)
    assert out["per_key"]["3"] == pytest.approx(-1.0)
    assert out["overall"] == pytest.approx(sum(r) / 3)
    text = tasks.format_summary({"top1@abstr": 50.0, "embed": 1.0}, out,
                                {3: {"top1": 100.0, "top2": 100.0}, 4: {"top1": 50.0, "top2": 75.0}})
    lines = text.splitlines()
    assert lines[0] == "-----Evaluation is finished------"
    assert lines[1] == "top1@abstr 50.000"
    assert lines[2] == f"Avg Rank Correlation (N=2): {out['per_key']['2']:.4f}"
    assert lines[4] == f"Overall Avg Rank Correlation: {out['overall']}"
    assert lines[5] == "N = 3 Acc@1 (100.000) Acc@2  (100.000)"
    assert lines[6] == "N = 4 Acc@1 (50.000) Acc@2  (75.000)"


def test_nan_policy_is_nanmean_with_count():
    records = _records({"2": [[1, 1, 1, 1, 1], [1, 2, 3, 4, 5]]})
    out = tasks.summarise_rank_correlations(records, [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]])
    assert out["nan_count"] == 1 and out["per_key"]["2"] == pytest.approx(1.0) and "nanmean" in out["nan_policy"]
    with pytest.raises(ValueError):  # predictions and records can never be misaligned (spec 9.11)
        tasks.summarise_rank_correlations(records, [[1, 2, 3, 4, 5]])


def test_outlier_scoring_by_largest_distance():
    dists = [torch.tensor([0.1, 0.2, 0.9]), torch.tensor([0.1, 0.8, 0.5, 0.3]), torch.tensor([0.9, 0.1, 0.2, 0.3, 0.8])]
    out = tasks.summarise_outliers([3, 4, 5], dists, [2, 2, 4])
    assert out[3] == {"top1": 100.0, "top2": 100.0, "count": 1}
    assert out[4]["top1"] == 0.0 and out[4]["top2"] == 100.0
    assert out[5]["top1"] == 0.0 and out[5]["top2"] == 100.0
    assert tasks.chance_outlier(4) == {"top1": 25.0, "top2": 50.0}


def test_majority_baseline():
    train = torch.tensor([[1, 2, 7], [1, 3, 7], [0, 2, 7]])
    val = torch.tensor([[1, 2, 7], [0, 3, 6]])
    subsets = [(0,), (1,), (0, 1)]
    out = tasks.majority_baseline(train, val, subsets)
    assert out["top1@abstr_2"] == 50.0 and out["top1@abstr_1"] == 25.0  # majority over both singleton slots


def test_legacy_lr_formula():
    assert schedule.legacy_lr(1e-4, 2.4523, 3) == pytest.approx(8.0e-6, rel=0.01)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    legacy = schedule.build_schedule("legacy", opt, 3)
    legacy.step_epoch()
    assert opt.param_groups[0]["lr"] == 1e-4
    legacy.step_validation(2.4523)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4 * (1 + math.cos(math.pi * 2.4523 / 3)) / 2)
    opt2 = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    cosine = schedule.build_schedule("cosine", opt2, 4)
    cosine.step_validation(2.4523)
    assert opt2.param_groups[0]["lr"] == 1e-4
    opt2.step()
    cosine.step_epoch()
    cosine.step_epoch()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.5e-4)
