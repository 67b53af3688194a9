"""common.pretrained: config.json + model.safetensors + model card, read back with no pickle."""
from __future__ import annotations

import pickle

import pytest
import torch

from common.checkpoint import CheckpointError
from common.pretrained import load_into, read_pretrained, save_pretrained


class Tied(torch.nn.Module):
    def __init__(self, vocab=11, dim=4):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, dim)
        self.head = torch.nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(self.emb(ids))


def test_round_trip_without_pickle(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = Tied()
    save_pretrained(model, tmp_path / "pub", paper="toy", architecture="Tied", config={"vocab": 11, "dim": 4},
                    card={"task": "copying", "metrics": {"accuracy": 0.98}, "metrics_source": "metrics.json",
                          "how_to_load": "Tied.from_pretrained('pub')"})
    card = (tmp_path / "pub" / "README.md").read_text()
    assert "| accuracy | 0.98 |" in card and "Tied.from_pretrained('pub')" in card and "copying" in card

    def no_pickle(*args, **kwargs):
        raise AssertionError("the loading path unpickled something")
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "Unpickler", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    config, state = read_pretrained(tmp_path / "pub", paper="toy")
    assert config["vocab"] == 11 and config["architecture"] == "Tied"
    clone = load_into(Tied(config["vocab"], config["dim"]), state, tmp_path / "pub")
    ids = torch.arange(11)
    assert torch.equal(clone(ids), model(ids))
    assert clone.head.weight.data_ptr() == clone.emb.weight.data_ptr()


def test_wrong_paper_and_missing_files(tmp_path):
    save_pretrained(Tied(), tmp_path / "pub", paper="toy", architecture="Tied", config={})
    with pytest.raises(CheckpointError, match="field 'paper'"):
        read_pretrained(tmp_path / "pub", paper="other")
    (tmp_path / "pub" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="--to_safetensors"):
        read_pretrained(tmp_path / "pub", paper="toy")
