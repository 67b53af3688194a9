"""Caption metrics with coco-caption's numbers: BLEU, METEOR, ROUGE-L, CIDEr(-D), SPICE; pure-Python PTB tokens.

- ``evaluate(references, predictions, metrics=None) -> {"Bleu_1".., "METEOR", "ROUGE_L", "CIDEr"[, "SPICE"]}``
- ``score_items(references, predictions, metrics=None) -> {metric: {id: score}}``
- ``ptb_tokenize(captions) -> list[str]`` (what pycocoevalcap's Java PTBTokenizer gives, no JVM)
- ``CiderD`` (SCST reward; ``from_pickle`` / ``from_references``; ``compute_score(candidates, references)``)
"""
from common.metrics.cider import CiderD, cider_scores, document_frequency
from common.metrics.evaluate import ALL_KEYS, DEFAULT_KEYS, evaluate, resolve_metrics, score_items, score_tokenized
from common.metrics.meteor import MetricUnavailable
from common.metrics.tokenizer import PUNCTUATIONS, ptb_tokenize

__all__ = [
    "ALL_KEYS",
    "DEFAULT_KEYS",
    "CiderD",
    "MetricUnavailable",
    "PUNCTUATIONS",
    "cider_scores",
    "document_frequency",
    "evaluate",
    "ptb_tokenize",
    "resolve_metrics",
    "score_items",
    "score_tokenized",
]
