"""Learning test (spec 10): the tiny SAM beats every baseline by a clear margin on the synthetic hierarchy."""
from __future__ import annotations

import pytest

from set_abstraction import demo, tasks


@pytest.fixture(scope="module")
def trained(syn_dir, tmp_path_factory):
    return demo.train_and_evaluate(syn_dir, tmp_path_factory.mktemp("learn"), "moments", epochs=8)


def test_abstraction_accuracy_beats_majority(trained):
    acc, majority = trained["results"]["abstraction"], trained["baselines"]["majority"]
    for size in (2, 3, 4):
        assert acc[f"top1@abstr_{size}"] >= 2 * majority[f"top1@abstr_{size}"], size
    assert acc["top1@abstr_1"] >= 50.0
    assert acc["top1@abstr"] >= 80.0


def test_set_completion_spearman_beats_feature_mean(trained):
    model, base = trained["results"]["set_completion"], trained["baselines"]["ranking"]
    assert model["overall"] >= 0.5
    assert model["overall"] >= base["overall"] + 0.2


def test_odd_one_out_beats_chance(trained):
    out = trained["results"]["odd_one_out"]
    for n in tasks.OUTLIER_SIZES:
        assert out[str(n)]["top1"] >= 80.0, n
        assert out[str(n)]["top1"] > tasks.chance_outlier(n)["top1"] + 40


def test_training_loss_decreases_over_epochs(trained):
    losses = [h["full"] for h in trained["history"]["train"]]
    assert len(losses) == 8 and len(trained["history"]["train"]) * 16 <= 150  # <= 150 steps
    assert all(b < a for a, b in zip(losses, losses[1:])), losses


def test_evaluation_files_in_original_layout(trained):
    results = trained["results"]
    assert results["figure"].endswith("_example.png")
    summary = open(results["figure"].replace("outputs", "logs").replace("_example.png", "_summary.txt")).read()
    assert summary.startswith("-----Evaluation is finished------\ntop1@abstr ")
    assert "Overall Avg Rank Correlation: " in summary and "N = 5 Acc@1 (" in summary
