"""evaluate_generation: item construction, diversity, and parity with pycocoevalcap 1.2 (assert 10, pitfalls 25-28)."""
from __future__ import annotations

import json

import pytest

from common.errors import InputError
from visualcomet import evaluation
from visualcomet.scripts import evaluate_generation

REFS = [
    {"img_fn": "a.jpg", "event": "1 is cooking", "intent": ["feed the family", "make dinner for 2"],
     "before": ["buy some vegetables"], "after": ["serve the food to 2", "wash the dishes"]},
    {"img_fn": "b.jpg", "event": "2 is dancing", "intent": ["have fun"], "after": ["go home", "Sleep well."]},
]
GENS = [
    {"event_idx": 0, "inference_relation": "intent", "generations": ["feed the family", "make dinner for <|det2|>"]},
    {"event_idx": 0, "inference_relation": "after", "generations": ["serve food to 2", "wash the dishes"]},
    {"event_idx": 1, "inference_relation": "before", "generations": ["put on shoes", "stretch"]},  # no refs key
    {"event_idx": 1, "inference_relation": "after", "generations": ["sleep well", "go to a party"]},
]
TRAIN = [{"intent": ["feed the family"], "before": ["don't wait for 3"], "after": ["Sleep well."]}]


def test_items_repeat_references_per_generation():
    refs, preds = evaluation.scoring_items(GENS, REFS)
    assert len(preds) == 6  # the 'before' record of event 1 has no references -> skipped, no KeyError (pitfall 28)
    assert preds[1] == "make dinner for 2"  # <|det and |> stripped
    assert refs[0] == refs[1] == REFS[0]["intent"]  # the same reference set once per generation (pitfall 25)
    with pytest.raises(InputError, match="event_idx"):
        evaluation.scoring_items([{"event_idx": 7, "inference_relation": "after", "generations": []}], REFS)


def test_diversity_definitions():
    train = evaluation.train_sentences(TRAIN)
    assert train == {"feed the family", "don't wait for 1", "Sleep well."}
    d = evaluation.diversity(["feed the family", "feed the family", "sleep well", "don't wait for 2"], train)
    assert d["Unique"] == 3 / 4
    # 'sleep well' is novel because training sentences are raw, not PTB-tokenised (pitfall 26, K)
    assert d["Novel"] == 1 / 4
    from common.metrics import ptb_tokenize

    normalised = evaluation.train_sentences(TRAIN, ptb_tokenize)  # the O variant
    assert "sleep well" in normalised
    assert evaluation.diversity(["sleep well"], normalised)["Novel"] == 0.0


@pytest.mark.java
def test_scores_equal_pycocoevalcap_with_original_items(tmp_path, java):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gens, refs_file, train_file = tmp_path / "val_gens.json", tmp_path / "val_annots.json", tmp_path / "train.json"
    gens.write_text(json.dumps(GENS))
    refs_file.write_text(json.dumps(REFS))
    train_file.write_text(json.dumps(TRAIN))
    assert evaluate_generation.main(["--gens_file", str(gens), "--refs_file", str(refs_file), "--diversity",
                                     "--train_file", str(train_file), "--normalized_novel"]) == 0
    ours = json.loads((tmp_path / "val_gens.evaluate.json").read_text())
    refs, preds = evaluation.scoring_items(GENS, REFS)
    tok = PTBTokenizer()
    r = tok.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
    p = tok.tokenize({k: [{"caption": preds[k]}] for k in preds})
    bleu, _ = Bleu(4).compute_score(r, p)
    cider, _ = Cider().compute_score(r, p)
    assert ours["Bleu_2"] == pytest.approx(bleu[1], abs=1e-6)
    assert ours["Bleu_4"] == pytest.approx(bleu[3], abs=1e-6)
    assert ours["CIDEr"] == pytest.approx(cider, abs=1e-6)
    assert 0.0 < ours["METEOR"] <= 1.0  # common.metrics runs pycocoevalcap's own meteor-1.5.jar
    expected = evaluation.diversity([p[k][0] for k in sorted(p)], evaluation.train_sentences(TRAIN))
    assert ours["Unique"] == pytest.approx(expected["Unique"]) and ours["Novel"] == pytest.approx(expected["Novel"])
    assert ours["Novel_normalized"] <= ours["Novel"]
    with pytest.raises(InputError, match="exists"):  # results are never overwritten silently
        evaluate_generation.main(["--gens_file", str(gens), "--refs_file", str(refs_file)])
