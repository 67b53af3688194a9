"""Language and diversity metrics of ``evaluate_generation.py`` (spec 5.3), scored through ``common.metrics``.

Item construction is the original's: every generation of a (event, relation) is one item whose references are all
reference sentences of that pair, so each reference set counts 5 times in CIDEr's document frequencies (pitfall 25,
K). A relation missing from an annotation gives no references instead of a KeyError (pitfall 28, F).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.errors import InputError

METRIC_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "CIDEr")


def log_results(run_dir: str | Path, values: dict[str, Any], report_to: Any = (), split: str = "val") -> None:
    """Append an evaluation's numbers to ``<run_dir>/metrics.jsonl`` (common schema), at the run's last logged step.

    ``run_dir`` is the directory of the model (or of its outputs); the step is the largest one already in its
    ``metrics.jsonl`` (the training's final step), 0 for a model trained elsewhere.
    """
    from common.experiment_log import METRICS_NAME, ExperimentLog, read_metrics

    run_dir = Path(run_dir)
    step = max((r["step"] for r in read_metrics(run_dir)), default=0) if (run_dir / METRICS_NAME).is_file() else 0
    numbers = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    with ExperimentLog(run_dir, report_to=report_to) as experiment:
        experiment.log(numbers, step=step, split=split)


def read_json_list(path: str | Path, what: str) -> list:
    """A JSON list from ``path`` or an InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON: {err}") from None
    if not isinstance(obj, list):
        raise InputError(path, f"expected a JSON list ({what})")
    return obj


def scoring_items(gens: list[dict[str, Any]], refs: list[dict[str, Any]], gens_file: str = "gens",
                  ) -> tuple[dict[int, list[str]], dict[int, str]]:
    """(references, predictions) keyed by item number: one item per generation with non-empty references."""
    references: dict[int, list[str]] = {}
    predictions: dict[int, str] = {}
    cnt = 0
    for k, g in enumerate(gens):
        for field in ("event_idx", "inference_relation", "generations"):
            if field not in g:
                raise InputError(gens_file, "missing", record=k, field=field)
        idx = g["event_idx"]
        if not isinstance(idx, int) or not 0 <= idx < len(refs):
            raise InputError(gens_file, f"event_idx {idx!r} is outside the {len(refs)} reference records",
                             record=k, field="event_idx")
        ref_sents = refs[idx].get(g["inference_relation"]) or []
        if not ref_sents:
            continue
        for gen in g["generations"]:
            predictions[cnt] = gen.replace("<|det", "").replace("|>", "")
            references[cnt] = list(ref_sents)
            cnt += 1
    return references, predictions


def norm_sentence(s: str) -> str:
    """Diversity normalisation: split apostrophes, every number -> '1', re-join apostrophes."""
    toks = ["1" if t.isdigit() else t for t in s.replace("'", " '").split()]
    return " ".join(toks).replace(" '", "'")


def train_sentences(train_annots: list[dict[str, Any]], tokenize=None) -> set[str]:
    """Normalised training inference sentences: raw as in the original (pitfall 26, K), or passed through
    ``tokenize`` (the PTB tokenizer) like the predictions (the O variant)."""
    sents = [s for ann in train_annots for rel in ("intent", "before", "after") for s in (ann.get(rel) or [])]
    if tokenize is not None:
        sents = tokenize(sents)
    return {norm_sentence(s) for s in sents}


def diversity(tokenized_predictions: list[str], train_set: set[str]) -> dict[str, float]:
    """Unique = distinct / all items; Novel = share of items not in the training sentences (over all items)."""
    if not tokenized_predictions:
        return {"Unique": 0.0, "Novel": 0.0}
    normed = [norm_sentence(p) for p in tokenized_predictions]
    return {"Unique": len(set(normed)) / len(normed), "Novel": sum(p not in train_set for p in normed) / len(normed)}


def evaluate_generations(gens_file: str | Path, refs_file: str | Path, with_diversity: bool = False,
                         train_file: str | Path | None = None, metrics: list[str] | None = None,
                         normalized_novel: bool = False) -> dict[str, float]:
    """The dict written to ``*.evaluate.json``: Bleu_1..4, METEOR, CIDEr (+ Unique, Novel[, Novel_normalized])."""
    from common.metrics import evaluate, ptb_tokenize

    gens = read_json_list(gens_file, "generations file")
    refs = read_json_list(refs_file, "reference annotations")
    references, predictions = scoring_items(gens, refs, str(gens_file))
    if not predictions:
        raise InputError(gens_file, "no generation has references to score against")
    result: dict[str, float] = {}
    if with_diversity:
        if train_file is None:
            raise InputError("--train_file", "--diversity needs --train_file train_annots.json")
        keys = sorted(predictions)
        tokenized = ptb_tokenize([predictions[k] for k in keys])
        train_annots = read_json_list(train_file, "training annotations")
        result.update(diversity(tokenized, train_sentences(train_annots)))
        if normalized_novel:
            result["Novel_normalized"] = diversity(tokenized, train_sentences(train_annots, ptb_tokenize))["Novel"]
    scores = evaluate(references, predictions, metrics=metrics or ["Bleu", "METEOR", "CIDEr"])
    result.update({k: float(v) for k, v in scores.items() if k in METRIC_KEYS})
    return result
