"""Fixtures of the clip4idc tests: a small synthetic dataset (from clip4idc.synthetic) and tiny models."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def syn_root(tmp_path_factory):
    """Synthetic CLEVR-Change / Spot-the-Diff / IER data in the real formats (tiny sizes)."""
    from clip4idc.synthetic import write_all

    return write_all(tmp_path_factory.mktemp("clip4idc_syn"), n_train=48, n_val=8, n_test=16, size=28, seed=0,
                     spot_pairs=12, ier_pairs=10)


@pytest.fixture(scope="session")
def tokenizer():
    """The CLIP BPE tokenizer."""
    from clip4idc.tokenizer import get_tokenizer

    return get_tokenizer()


@pytest.fixture()
def tiny_caption_model():
    """A seeded tiny caption-stage model (tiny.json + decoder-tiny.json)."""
    from clip4idc.models import build_model, load_clip_config, load_decoder_config

    torch.manual_seed(0)
    return build_model(load_clip_config("tiny"), load_decoder_config("decoder-tiny"), "caption").eval()


TINY_FLAGS = ["--pretrained_clip_name", "tiny", "--random_clip_weights", "--decoder_model", "decoder-tiny",
              "--intra_num_hidden_layers", "2",
              "--max_words", "10", "--freeze_layer_num", "-1", "--num_thread_reader", "0", "--datatype", "clevr",
              "--coef_lr", "1", "--lr", "1e-3", "--batch_size_val", "64", "--n_display", "1"]


@pytest.fixture(scope="session")
def tiny_flags():
    """Flags that make the scripts run the tiny configuration on the synthetic CLEVR set."""
    return list(TINY_FLAGS)
