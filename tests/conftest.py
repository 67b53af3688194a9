"""Shared test fixtures: where ../shared lives, Java detection, one torch thread per worker."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # common.metrics tests do not need torch
    pass

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"


def _shared_dir() -> Path:
    return Path(os.environ.get("VLP_SHARED_DIR", REPO_ROOT.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """../shared/data when present (CI has it); otherwise skip with the reason printed (-rs)."""
    data = _shared_dir() / "data"
    if not data.is_dir():
        pytest.skip(f"{data} not found: real-data test skipped; its synthetic twin runs instead")
    return data


@pytest.fixture(scope="session")
def java() -> str:
    """Path of the java executable; skip with the reason printed when there is none."""
    path = shutil.which("java")
    if path is None:
        pytest.skip("java not on PATH: test needs the METEOR / PTBTokenizer jars of pycocoevalcap")
    return path
