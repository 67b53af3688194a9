"""Fixtures: one synthetic "object + position" data set per test session (spec 10.1)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def syn(tmp_path_factory) -> dict:
    """Paths of the synthetic set, built by spatial_captioning.synthetic (runs our prepro scripts)."""
    from spatial_captioning.synthetic import make_synthetic_coco

    return make_synthetic_coco(tmp_path_factory.mktemp("sc_data"), n_train=400, n_val=50, n_test=50, seed=0)
