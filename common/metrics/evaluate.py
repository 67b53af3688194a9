"""coco-caption evaluation without a JVM for tokenisation: ``evaluate`` and per-item ``score_items``.

Same pipeline as pycocoevalcap's COCOEvalCap: PTB-tokenise references (all of them, in item order) and
predictions (in item order) separately, then Bleu(4), METEOR, ROUGE-L, CIDEr (coco-caption's CIDEr-D with
idf from the evaluated references) and, when asked, SPICE.
"""
from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

from common.errors import InputError
from common.metrics.bleu import bleu
from common.metrics.cider import cider_scores
from common.metrics.meteor import MeteorScorer, meteor
from common.metrics.ngrams import build_table, joined_sentences
from common.metrics.rouge import rouge_l
from common.metrics.spice import spice
from common.metrics.tokenizer import ptb_tokenize

ALL_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")
DEFAULT_KEYS = ALL_KEYS[:-1]
_ALIASES = {k.lower(): (k,) for k in ALL_KEYS}
_ALIASES.update({"bleu": ALL_KEYS[:4], "rouge": ("ROUGE_L",), "rouge-l": ("ROUGE_L",), "rougel": ("ROUGE_L",),
                 "cider-d": ("CIDEr",), "ciderd": ("CIDEr",)})


def resolve_metrics(metrics: Iterable[str] | None) -> tuple[str, ...]:
    """Canonical coco-caption keys for a metrics request (None: all but SPICE; "Bleu": Bleu_1..4)."""
    if metrics is None:
        return DEFAULT_KEYS
    if isinstance(metrics, str):
        metrics = [metrics]
    keys: list[str] = []
    for m in metrics:
        found = _ALIASES.get(str(m).lower())
        if found is None:
            raise ValueError(f"unknown metric {m!r}; choose from Bleu, {', '.join(ALL_KEYS)}")
        keys.extend(k for k in found if k not in keys)
    return tuple(k for k in ALL_KEYS if k in keys)


def _check(references: Mapping[Hashable, Sequence[str]], predictions: Mapping[Hashable, str]) -> list:
    if not predictions:
        raise InputError("predictions", "no predictions to evaluate")
    ids = list(predictions)
    for i in ids:
        if i not in references:
            raise InputError("references", f"no references for prediction id {i!r}", record=i)
        refs = references[i]
        if isinstance(refs, str) or not isinstance(refs, Sequence) or len(refs) == 0:
            raise InputError("references", "expected a non-empty list of caption strings", record=i)
        if not all(isinstance(r, str) for r in refs):
            raise InputError("references", "every reference must be a string", record=i)
        if not isinstance(predictions[i], str):
            raise InputError("predictions", "the prediction must be one caption string", record=i)
    return ids


def tokenize_pairs(
    references: Mapping[Hashable, Sequence[str]], predictions: Mapping[Hashable, str]
) -> tuple[list, list[list[str]], list[str]]:
    """(ids, tokenised reference lists, tokenised predictions) in the order of ``predictions``."""
    ids = _check(references, predictions)
    flat = [r for i in ids for r in references[i]]
    tok = ptb_tokenize(flat)
    refs_tok: list[list[str]] = []
    pos = 0
    for i in ids:
        k = len(references[i])
        refs_tok.append(tok[pos:pos + k])
        pos += k
    preds_tok = ptb_tokenize(predictions[i] for i in ids)
    return ids, refs_tok, preds_tok


def score_tokenized(
    references: Sequence[Sequence[str]], predictions: Sequence[str], metrics: Iterable[str] | None = None,
    meteor_scorer: MeteorScorer | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(corpus scores, per-item score arrays) for already tokenised inputs (METEOR through
    ``meteor_scorer`` when given: one JVM for several calls)."""
    keys = resolve_metrics(metrics)
    corpus: dict[str, float] = {}
    items: dict[str, np.ndarray] = {}
    table = None
    if any(k.startswith("Bleu") for k in keys) or "CIDEr" in keys:
        table = build_table(joined_sentences(predictions, references), 4)
    if any(k.startswith("Bleu") for k in keys):
        score, per = bleu(predictions, references, 4, table=table)
        for k in range(4):
            name = f"Bleu_{k + 1}"
            if name in keys:
                corpus[name], items[name] = float(score[k]), per[k]
    if "METEOR" in keys:
        score, per = meteor(predictions, references, scorer=meteor_scorer)
        corpus["METEOR"], items["METEOR"] = score, np.asarray(per, dtype=np.float64)
    if "ROUGE_L" in keys:
        corpus["ROUGE_L"], items["ROUGE_L"] = rouge_l(predictions, references)
    if "CIDEr" in keys:
        per = cider_scores(predictions, references, table=table)
        corpus["CIDEr"], items["CIDEr"] = float(np.mean(per)), per
    if "SPICE" in keys:
        corpus["SPICE"], items["SPICE"] = spice(predictions, references)
    return {k: corpus[k] for k in keys}, {k: items[k] for k in keys}


def evaluate(
    references: Mapping[Hashable, Sequence[str]],
    predictions: Mapping[Hashable, str],
    metrics: Iterable[str] | None = None,
    meteor_scorer: MeteorScorer | None = None,
) -> dict[str, float]:
    """coco-caption scores of raw predictions {id: caption} against raw references {id: [captions]}
    (METEOR through ``meteor_scorer`` when given)."""
    keys = resolve_metrics(metrics)
    _, refs_tok, preds_tok = tokenize_pairs(references, predictions)
    corpus, _ = score_tokenized(refs_tok, preds_tok, keys, meteor_scorer=meteor_scorer)
    return corpus


def score_items(
    references: Mapping[Hashable, Sequence[str]],
    predictions: Mapping[Hashable, str],
    metrics: Iterable[str] | None = None,
) -> dict[str, dict[Hashable, float]]:
    """Per-item scores {metric: {id: score}} (coco-caption's imgToEval), same pipeline as ``evaluate``."""
    keys = resolve_metrics(metrics)
    ids, refs_tok, preds_tok = tokenize_pairs(references, predictions)
    _, items = score_tokenized(refs_tok, preds_tok, keys)
    return {k: {i: float(v) for i, v in zip(ids, items[k])} for k in keys}
