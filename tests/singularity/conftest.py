"""Session fixtures for the Singularity tests: one synthetic dataset built in a temporary directory."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("SL_DATA_DIR", "/nonexistent-sl-data-dir")


@pytest.fixture(scope="session")
def syn_dir(tmp_path_factory):
    """A synthetic dataset (``python -m singularity.synthetic``) shared by the session."""
    from singularity.synthetic import generate

    return generate(tmp_path_factory.mktemp("singularity_syn") / "data")


@pytest.fixture(scope="session")
def tiny_config():
    """Factory: a merged config for one of the synthetic YAMLs with extra dotlist overrides."""
    from singularity.config import load_config

    def make(syn, name: str, *overrides: str):
        return load_config(str(syn / "configs" / f"{name}.yaml"), list(overrides))
    return make


@pytest.fixture(scope="session")
def tiny_model_factory():
    """Factory: a tiny model (configs/beit_tiny.json + config_bert_tiny.json) for ``task``, seeded."""
    import torch
    from omegaconf import OmegaConf

    from singularity.tasks_common import build_model_for_task

    def make(task: str, seed: int = 0, **extra):
        cfg = {"vit_config": "configs/beit_tiny.json", "bert_config": "configs/config_bert_tiny.json",
               "image_res": 32, "embed_dim": 32, "num_decoder_layers": 1, "video_input": {"num_frames": 1}}
        cfg.update(extra)
        torch.manual_seed(seed)
        model = build_model_for_task(task, OmegaConf.create(cfg))
        if hasattr(model, "cls_token_id"):
            model.cls_token_id, model.mask_token_id = 2, 4
        return model
    return make
