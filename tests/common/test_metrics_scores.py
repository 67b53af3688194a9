"""BLEU / ROUGE-L / CIDEr equal pycocoevalcap 1.2 (<= 1e-9, corpus and per item); METEOR identical.

Real data (via shared_data_dir): abstract48S, one held-out caption per image against the other 47;
Spot-the-Diff GT (COCO format), leave-one-out where an image has >= 2 captions. Synthetic twins always run.
"""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from common.errors import InputError
from common.metrics import MetricUnavailable, evaluate, score_items, score_tokenized
from common.metrics.evaluate import tokenize_pairs
from common.metrics.synthetic import QUIRKS, caption_sets

TOL = 1e-9


def leave_one_out(records: list[dict]) -> tuple[dict, dict]:
    """First caption of each image with >= 2 captions is the prediction, the others its references."""
    by_image: dict = {}
    for rec in records:
        by_image.setdefault(rec["image_id"], []).append(rec["caption"])
    keep = {k: v for k, v in by_image.items() if len(v) >= 2}
    return {k: v[1:] for k, v in keep.items()}, {k: v[0] for k, v in keep.items()}


def synthetic_coco(seed: int = 1) -> list[dict]:
    """Spot-like COCO annotations: 1-5 captions per image, some empty or punctuation-only, duplicated sets."""
    rng = random.Random(seed)
    recs = caption_sets(150, 5, seed=seed)
    out = []
    for i in range(150):
        caps = [r["caption"] for r in recs[i * 5:(i + 1) * 5]][: rng.randint(1, 5)]
        if rng.random() < 0.05:
            caps[-1] = ""
        if rng.random() < 0.03:
            caps[0] = "..."
        out += [{"image_id": f"{i}.png", "caption": c} for c in caps]
    # visualcomet-style duplicated reference sets (idf counts them once per item)
    for j in range(5):
        out += [{"image_id": f"dup{j}", "caption": c} for c in ("a man is here .", "a man walks", QUIRKS[0])]
    return out


def _real(shared_data_dir, name: str) -> tuple[dict, dict]:
    path = shared_data_dir / "captions" / name
    data = json.loads(path.read_text(encoding="utf-8"))
    return leave_one_out(data["annotations"] if isinstance(data, dict) else data)


DATASETS = {
    "abstract48S": lambda request: _real(request.getfixturevalue("shared_data_dir"), "abstract48S.json"),
    "spot": lambda request: _real(request.getfixturevalue("shared_data_dir"),
                                  "spot_total_change_captions_reformat.json"),
    "synthetic_abstract": lambda request: leave_one_out(caption_sets(120, 12, seed=5)),
    "synthetic_coco": lambda request: leave_one_out(synthetic_coco()),
}


@pytest.fixture(scope="module", params=list(DATASETS))
def dataset(request) -> tuple[str, dict, dict]:
    refs, preds = DATASETS[request.param](request)
    return request.param, refs, preds


def _coco_scores(gts: dict, res: dict) -> dict[str, tuple]:
    out = {}
    b, bs = Bleu(4).compute_score(gts, res, verbose=0)
    for k in range(4):
        out[f"Bleu_{k + 1}"] = (b[k], np.array(bs[k]))
    out["ROUGE_L"] = Rouge().compute_score(gts, res)
    out["CIDEr"] = Cider().compute_score(gts, res)
    return out


def test_scores_equal_pycocoevalcap_on_same_tokens(dataset):
    name, refs, preds = dataset
    ids, refs_tok, preds_tok = tokenize_pairs(refs, preds)
    gts = {i: r for i, r in zip(ids, refs_tok)}
    res = {i: [p] for i, p in zip(ids, preds_tok)}
    theirs = _coco_scores(gts, res)
    ours, items = score_tokenized(refs_tok, preds_tok, ["Bleu", "ROUGE_L", "CIDEr"])
    assert set(ours) == set(theirs)
    for key, (score, per_item) in theirs.items():
        assert abs(ours[key] - score) <= TOL, (name, key, ours[key], score)
        np.testing.assert_allclose(items[key], per_item, rtol=0, atol=TOL, err_msg=f"{name} {key}")


@pytest.mark.java
def test_evaluate_end_to_end_against_java_pipeline(dataset, java):
    """evaluate() on raw strings == COCOEvalCap's pipeline (Java PTBTokenizer, then the scorers)."""
    name, refs, preds = dataset
    if name == "abstract48S":
        refs = dict(list(refs.items())[:150])  # the Java pipeline on all 500 x 47 is covered piecewise
        preds = {k: preds[k] for k in refs}
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in refs[k]] for k in preds})
    res = tok.tokenize({k: [{"caption": preds[k]}] for k in preds})
    theirs = _coco_scores(gts, res)
    ours = evaluate(refs, preds, metrics=["Bleu", "ROUGE_L", "CIDEr"])
    for key, (score, _) in theirs.items():
        assert abs(ours[key] - score) <= TOL, (name, key, ours[key], score)


@pytest.fixture(scope="module")
def meteor_inputs(request) -> dict[str, tuple[list, list]]:
    """Tokenised (refs, preds) per group: synthetic always, real data when ../shared is there."""
    groups = {}
    names = ["synthetic_abstract", "synthetic_coco", "spot", "abstract48S"]
    for name in names:
        try:
            refs, preds = DATASETS[name](request)
        except pytest.skip.Exception:
            continue
        if name == "abstract48S":  # METEOR on 500 x 47 references costs ~20 CPU-s per JVM; 100 images suffice
            refs = dict(list(refs.items())[:100])
            preds = {k: preds[k] for k in refs}
        _, refs_tok, preds_tok = tokenize_pairs(refs, preds)
        groups[name] = (refs_tok, preds_tok)
    return groups


@pytest.fixture(scope="module")
def meteor_runs(java, meteor_inputs) -> tuple[dict, tuple, tuple]:
    """One JVM each: our bridge and pycocoevalcap's Meteor on all groups concatenated."""
    refs, preds, spans, pos = [], [], {}, 0
    for name, (r, p) in meteor_inputs.items():
        refs += r
        preds += p
        spans[name] = (pos, pos + len(p))
        pos += len(p)
    ours, per = score_tokenized(refs, preds, ["METEOR"])
    keys = [f"{i:06d}" for i in range(len(preds))]
    m = Meteor()
    try:
        score, scores = m.compute_score({k: r for k, r in zip(keys, refs)}, {k: [p] for k, p in zip(keys, preds)})
    finally:
        del m
    return spans, (ours["METEOR"], per["METEOR"]), (score, scores)


@pytest.mark.java
@pytest.mark.parametrize("group", ["synthetic_abstract", "synthetic_coco", "spot", "abstract48S"])
def test_meteor_identical(group, meteor_runs):
    spans, (ours, ours_items), (theirs, theirs_items) = meteor_runs
    if group not in spans:
        pytest.skip(f"{group}: real captions not available (../shared missing)")
    a, b = spans[group]
    assert list(ours_items[a:b]) == list(theirs_items[a:b])
    assert ours == theirs


def test_score_items_and_subsets():
    refs, preds = leave_one_out(caption_sets(30, 6, seed=7))
    per = score_items(refs, preds, metrics=["CIDEr", "ROUGE_L", "Bleu_4"])
    corpus = evaluate(refs, preds, metrics=["CIDEr", "ROUGE_L", "Bleu_4"])
    assert list(corpus) == ["Bleu_4", "ROUGE_L", "CIDEr"]
    assert list(per) == ["Bleu_4", "ROUGE_L", "CIDEr"]
    assert set(per["CIDEr"]) == set(preds)
    assert abs(np.mean(list(per["CIDEr"].values())) - corpus["CIDEr"]) <= TOL
    assert abs(np.mean(list(per["ROUGE_L"].values())) - corpus["ROUGE_L"]) <= TOL
    assert list(evaluate(refs, preds, metrics=["CIDEr"])) == ["CIDEr"]
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(refs, preds, metrics=["BLEURT"])


def test_perfect_and_empty_predictions():
    refs = {1: ["a dog runs on the grass", "a dog is running"], 2: ["two cats sleep", "cats are sleeping"]}
    perfect = evaluate(refs, {1: "a dog runs on the grass", 2: "two cats sleep"}, metrics=["Bleu", "ROUGE_L"])
    assert perfect["ROUGE_L"] == pytest.approx(1.0)
    assert perfect["Bleu_1"] == pytest.approx(1.0)
    empty = evaluate(refs, {1: "", 2: "..."}, metrics=["Bleu", "ROUGE_L", "CIDEr"])
    assert empty["CIDEr"] == 0.0 and empty["ROUGE_L"] == 0.0 and empty["Bleu_1"] < 1e-6


def test_bad_input_is_reported():
    with pytest.raises(InputError, match="no references for prediction id 3"):
        evaluate({1: ["a b"]}, {1: "a", 3: "b"})
    with pytest.raises(InputError, match="non-empty list"):
        evaluate({1: []}, {1: "a"})
    with pytest.raises(InputError, match="no predictions"):
        evaluate({1: ["a"]}, {})


def test_meteor_without_java_names_java(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MetricUnavailable, match="`java`"):
        evaluate({1: ["a dog"]}, {1: "a dog"}, metrics=["METEOR"])


def test_spice_without_models_says_what_to_install():
    from common.metrics.spice import MODEL_JARS, spice_lib

    if all((spice_lib() / j).is_file() for j in MODEL_JARS):
        pytest.skip("SPICE models are installed here; the error path cannot be exercised")
    with pytest.raises(MetricUnavailable, match="stanford-corenlp-3.6.0.*get_stanford_models"):
        evaluate({1: ["a dog"]}, {1: "a dog"}, metrics=["SPICE"])
