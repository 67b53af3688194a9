"""Spec 5.5 / 9.17 / 9.18: retrieval metrics on hand-made similarities, caption scores via common.metrics,
the CLEVR per-change-type breakdown and the change / change-type accuracies."""
import numpy as np
import pytest

from common.errors import InputError
from clip4idc.data.common import coco_gt
from clip4idc.evaluation import (change_accuracy, clevr_breakdown, group_similarity, references_from_gt,
                                 retrieval_metrics, score_captions)
from clip4idc.synthetic import caption_type


def test_retrieval_metrics_with_padded_group():
    # 3 pairs; pair 0 has 2 sentences, pairs 1 and 2 one each -> 4 sentences
    sim = np.array([[0.9, 0.1, 0.2],    # s0 of pair 0: rank 0
                    [0.3, 0.8, 0.1],    # s1 of pair 0: rank 1
                    [0.1, 0.7, 0.2],    # pair 1: rank 0
                    [0.5, 0.6, 0.4]])   # pair 2: rank 2
    grouped = group_similarity(sim, [2, 3, 4])
    assert grouped.shape == (3, 2, 3) and np.isinf(grouped[1, 1]).all()
    m = retrieval_metrics(grouped)
    assert m["R1"] == pytest.approx(50.0) and m["R5"] == 100.0
    assert m["MR"] == pytest.approx(1.5) and m["MeanR"] == pytest.approx((1 + 2 + 1 + 3) / 4)
    # pair->text: M[p, q] = max over sentences of group q; own group rank for pairs 0,1,2 = 0,0,1
    assert m["V2T$R1"] == pytest.approx(200 / 3)


def test_tie_handling_strict_vs_original():
    grouped = np.array([[[1.0, 1.0]], [[0.0, 1.0]]])
    strict = retrieval_metrics(grouped, "strict")
    original = retrieval_metrics(grouped, "original")
    assert strict["V2T$R1"] == 100.0
    # the original's compute_metrics counts every tied position (spec 9.17)
    assert original["V2T$R1"] != strict["V2T$R1"] or original["V2T$MeanR"] != strict["V2T$MeanR"]


def test_caption_scores_and_unknown_ids():
    gt = coco_gt(["1.png", "2.png"], [("1.png", "the red block moved"), ("1.png", "a red block moved"),
                                      ("2.png", "nothing changed"), ("2.png", "")])
    perfect = score_captions({"1.png": "the red block moved", "2.png": "nothing changed"}, gt, ["Bleu", "CIDEr"])
    assert perfect["Bleu_1"] == pytest.approx(1.0) and perfect["Bleu_4"] > 0.0
    worse = score_captions({"1.png": "the blue block moved", "2.png": "nothing changed"}, gt, ["Bleu", "CIDEr"])
    assert worse["CIDEr"] < perfect["CIDEr"] and worse["Bleu_4"] < perfect["Bleu_4"]
    with pytest.raises(InputError, match="not in the GT"):
        references_from_gt(gt, ["3.png"])


def test_clevr_breakdown_subsets():
    gt = coco_gt(["000001.png", "000002.png", "000001.png_n", "000002.png_n"],
                 [("000001.png", "the red block moved"), ("000002.png", "the blue block changed to red"),
                  ("000001.png_n", "nothing changed"), ("000002.png_n", "nothing changed")])
    hyps = {"000001.png": "the red block moved", "000002.png": "the blue block changed to red",
            "000001.png_n": "nothing changed", "000002.png_n": "nothing changed"}
    report = clevr_breakdown(hyps, gt, {"move": {"000001.png"}, "color": {"000002.png"}, "add": set()}, ["Bleu"])
    assert set(report) == {"total", "semantic", "distractor", "move", "color", "add"}
    assert report["add"] == {} and report["move"]["Bleu_1"] == pytest.approx(1.0)


def test_change_accuracy_and_majority():
    hyps = {"a": "the red block moved", "a_n": "nothing changed", "b": "nothing changed", "b_n": "the red block moved",
            "c": "a blue block was added", "c_n": "no change was made"}
    truth = {"a": "move", "a_n": "none", "b": "color", "b_n": "none", "c": "add", "c_n": "none"}
    acc = change_accuracy(hyps, truth, caption_type)
    assert acc["change_acc"] == pytest.approx(4 / 6) and acc["change_acc_majority"] == 0.5
    assert acc["type_acc"] == pytest.approx(2 / 3) and acc["type_acc_majority"] == pytest.approx(1 / 3)
    assert caption_type("the red block became metal") == "material" and caption_type("gibberish") == "unknown"


@pytest.mark.java
def test_meteor_through_common_metrics(java):
    gt = coco_gt(["1.png"], [("1.png", "the red block moved")])
    assert score_captions({"1.png": "the red block moved"}, gt, ["METEOR"])["METEOR"] > 0.9


def test_clevr_breakdown_scores_every_subset_through_one_meteor_jvm(monkeypatch):
    """Issue 15: one METEOR process for all subsets, with the numbers of one process per subset."""
    import subprocess

    import common.metrics.meteor as meteor_module
    from common.metrics import evaluate

    gt = {"annotations": [{"image_id": i, "caption": c} for i, c in (
        ("000001.png", "the red block moved"), ("000001.png", "the red block was moved"),
        ("000002.png", "the blue block changed to green"), ("000003.png", "a yellow block was added"),
        ("000001.png_n", "nothing changed"), ("000002.png_n", "the scene is the same"),
        ("000003.png_n", "no change"))]}
    hyps = {"000001.png": "the red block moved", "000002.png": "the blue block changed to red",
            "000003.png": "a block was added", "000001.png_n": "nothing changed",
            "000002.png_n": "the red block moved", "000003.png_n": "no change was made"}
    mapping = {"move": {"000001.png"}, "color": {"000002.png"}, "add": {"000003.png"}}
    started = []
    real_popen = subprocess.Popen
    monkeypatch.setattr(meteor_module.subprocess, "Popen", lambda *a, **k: started.append(a) or real_popen(*a, **k))
    report = clevr_breakdown(hyps, gt, mapping, ["METEOR", "Bleu"])
    assert len(started) == 1 and set(report) == {"total", "semantic", "distractor", "move", "color", "add"}
    # a subset scored last in the shared JVM equals the same subset scored by a JVM of its own
    alone = evaluate({"000003.png": ["a yellow block was added"]}, {"000003.png": "a block was added"}, ["METEOR"])
    assert report["add"]["METEOR"] == alone["METEOR"] and len(started) == 2
