"""Fixtures of the set_abstraction tests: synthetic metadata written by set_abstraction.synthetic."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from set_abstraction import cfg, synthetic


@pytest.fixture(scope="session")
def syn_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The spec 10 recipe (D=256, 600/200/200 videos, 1024/128 sets, 20 human records per key)."""
    return synthetic.generate(tmp_path_factory.mktemp("sa_syn"))


@pytest.fixture(scope="session")
def syn2048_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The D=2048 format variant (few videos and sets)."""
    return synthetic.generate(tmp_path_factory.mktemp("sa_syn2048"), feature_dim=2048, num_videos=(60, 40, 40),
                              num_train_sets=16, num_val_sets=8, human_per_key=3)


def _train_argv(metadata: Path, workdir: Path, *extra: str) -> list[str]:
    """Flags of a tiny run writing into ``workdir`` (spec 10 tiny model, one DataLoader process)."""
    return ["--metadata_dir", str(metadata), "--model_config", "tiny", "--lr", "3e-3", "-b", "64",
            "--num_workers", "0", "--log_dir", str(workdir / "logs"), "--checkpoint_dir", str(workdir / "ckpt"),
            "--output_dir", str(workdir / "out"), *extra]


@pytest.fixture(scope="session")
def train_argv():
    """Function (metadata_dir, workdir, *extra flags) -> argv of a tiny training run."""
    return _train_argv


@pytest.fixture(scope="session")
def make_args(train_argv):
    """Function (metadata_dir, workdir, *extra flags) -> parsed args of a tiny training run."""
    def make(metadata: Path, workdir: Path, *extra: str) -> argparse.Namespace:
        return cfg.parse_args(train_argv(metadata, workdir, *extra))
    return make
