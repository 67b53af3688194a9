"""Shared VisualCOMET fixtures: the synthetic dataset and its tokenizer, built once per test session."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def vc_data(tmp_path_factory) -> Path:
    """The synthetic dataset of visualcomet.synthetic (annotations, metadata, features, gpt2-tiny/)."""
    from visualcomet import synthetic

    return synthetic.generate(tmp_path_factory.mktemp("vc_synth"), seed=0)


@pytest.fixture(scope="session")
def vc_tokenizer(vc_data):
    from visualcomet.tokenization import VisualCometTokenizer

    return VisualCometTokenizer.from_pretrained(vc_data / "gpt2-tiny")


@pytest.fixture(scope="session")
def vc_paths(vc_data):
    from visualcomet.data import DataPaths

    return DataPaths.resolve(str(vc_data))


def train_argv(data: Path, out: Path, *extra: str, steps: int = 10, seq_len: int = 40) -> list[str]:
    """run_finetuning.py flags for a tiny CPU run on the synthetic data."""
    return ["--data_dir", str(data), "--model_name_or_path", str(data / "gpt2-tiny"), "--output_dir", str(out),
            "--max_seq_len", str(seq_len), "--per_gpu_train_batch_size", "16", "--per_gpu_eval_batch_size", "32",
            "--max_steps", str(steps), "--save_steps", "0", "--learning_rate", "1e-3", "--logging_steps", "5",
            "--no_cuda", *extra]


@pytest.fixture(scope="session")
def vc_trained(vc_data, tmp_path_factory) -> dict[str, Path]:
    """Image and text-only models trained 300 steps (the spec 10 calibration run)."""
    from visualcomet.scripts.run_finetuning import build_parser
    from visualcomet.training import train

    out = {}
    for name, extra in (("image", ()), ("text", ("--no_image",))):
        d = tmp_path_factory.mktemp(f"vc_{name}")
        train(build_parser().parse_args(train_argv(vc_data, d, "--overwrite_output_dir", *extra, steps=300)))
        out[name] = d
    return out


@pytest.fixture(scope="session")
def vc_train_argv():
    """The train_argv helper (conftest modules are not importable under --import-mode=importlib)."""
    return train_argv
