"""SPICE through pycocoevalcap's ``Spice`` (SPICE 1.0 jar), when its Stanford CoreNLP 3.6.0 models exist.

pycocoevalcap would try to download the models (stanford-corenlp-3.6.0.jar and -models.jar) on first use;
here a missing model is a clear error instead, since no network may be reachable.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.metrics.meteor import MetricUnavailable, find_java, pycocoevalcap_dir

MODEL_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


def spice_lib() -> Path:
    """pycocoevalcap's spice/lib directory, where the CoreNLP jars must be."""
    return pycocoevalcap_dir() / "spice" / "lib"


def check_spice() -> None:
    """Raise MetricUnavailable saying what to install when SPICE cannot run."""
    missing = [name for name in MODEL_JARS if not (spice_lib() / name).is_file()]
    if missing:
        raise MetricUnavailable(
            f"SPICE needs the Stanford CoreNLP 3.6.0 models in {spice_lib()}: missing {', '.join(missing)}. "
            "Install them with `python -c \"from pycocoevalcap.spice.get_stanford_models import "
            "get_stanford_models; get_stanford_models()\"` (downloads stanford-corenlp-full-2015-12-09.zip), "
            "or copy both jars there"
        )
    find_java()


def spice(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, np.ndarray]:
    """(mean SPICE F-score, per-item F-scores in input order) for tokenised hypotheses and references."""
    check_spice()
    from pycocoevalcap.spice.spice import Spice

    keys = [f"{i:09d}" for i in range(len(hypotheses))]  # sorted order == input order
    gts = {k: list(r) for k, r in zip(keys, references)}
    res = {k: [h] for k, h in zip(keys, hypotheses)}
    score, per_item = Spice().compute_score(gts, res)
    return float(score), np.array([item["All"]["f"] for item in per_item], dtype=np.float64)
