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


def test_visualised_choices_match_the_truth(trained):
    from set_abstraction.visualize import describe_outlier_record, hierarchy_layout

    exp = trained["experiment"]
    data = exp.meta.outlier()
    infos = [describe_outlier_record(exp.model, exp.graph, data, i) for i in range(0, len(data), 6)]
    assert all(info["predicted_outlier"] == info["true_outlier"] == len(info["members"]) - 1 for info in infos)
    assert all(info["true_abstraction"] == data.records[i * 6].common for i, info in enumerate(infos))
    agree = sum(info["predicted_abstraction"] == info["true_abstraction"] for info in infos) / len(infos)
    assert agree >= 0.8
    pos = hierarchy_layout(exp.graph.subgraph(["root", "top0.v.01", "group0.v.01", "act00.v.01", "act01.v.01"]))
    assert pos["root"][1] == 0 and pos["act00.v.01"][1] == pos["act01.v.01"][1] == -3
    assert pos["group0.v.01"][0] == (pos["act00.v.01"][0] + pos["act01.v.01"][0]) / 2
