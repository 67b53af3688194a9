"""Publishable checkpoints (issue 16): save_pretrained / from_pretrained and `convert --to_safetensors`."""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from clip4idc.convert import main as convert_main, new_to_original
from clip4idc.decoding import greedy_decode
from clip4idc.models import CLIP4IDC
from clip4idc.predict import main as predict_main


def _outputs(model):
    g = torch.Generator().manual_seed(3)
    bef, aft = torch.randn(2, 3, 28, 28, generator=g), torch.randn(2, 3, 28, 28, generator=g)
    with torch.no_grad():
        return model.encode_pair(bef, aft)[0], greedy_decode(model, bef, aft, 6)


def test_save_pretrained_round_trip(tiny_caption_model, tmp_path):
    """config.json + model.safetensors + model card; the reloaded model gives identical outputs."""
    scores = tmp_path / "scores_ep_3.json"
    scores.write_text(json.dumps({"total": {"Bleu_4": 0.5, "CIDEr": 1.25}, "color": {"CIDEr": 0.1}}))
    out = tiny_caption_model.save_pretrained(tmp_path / "pub", metrics_file=scores, max_words=10)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = (out / "README.md").read_text()
    assert "| CIDEr | 1.25 |" in card and "CLIP4IDC.from_pretrained" in card
    assert json.loads((out / "config.json").read_text())["max_words"] == 10
    loaded = CLIP4IDC.from_pretrained(out)
    for a, b in zip(_outputs(tiny_caption_model), _outputs(loaded)):
        assert torch.equal(a, b)


def _no_pickle(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used on the safetensors loading path")

    class Refuse:
        def __init__(self, *args, **kwargs):
            refuse()

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", Refuse)
    monkeypatch.setattr(torch, "load", refuse)


def test_to_safetensors_then_load_without_pickle(tiny_caption_model, tmp_path, monkeypatch):
    """An original-layout pickle file (as the authors' pytorch_model.bin.clevr) converted once; the result loads
    (CLIP4IDC.from_pretrained, and predict --init_model DIR) with every pickle entry point made to raise."""
    src = tmp_path / "pytorch_model.bin.clevr"
    torch.save(new_to_original(tiny_caption_model.state_dict()), src)
    assert convert_main(["--to_safetensors", str(src), str(tmp_path / "pub"), "--intra_num_hidden_layers", "2",
                         "--decoder_model", "decoder-tiny"]) == 0
    _no_pickle(monkeypatch)
    loaded = CLIP4IDC.from_pretrained(tmp_path / "pub")
    for a, b in zip(_outputs(tiny_caption_model), _outputs(loaded)):
        assert torch.equal(a, b)
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (28, 28), (10, 200, 30)).save(img)
    assert predict_main(["--init_model", str(tmp_path / "pub"), "--before", str(img), "--after", str(img),
                         "--device", "cpu", "--max_words", "5", "--output", str(tmp_path / "caps.json")]) == 0
    assert len(json.loads((tmp_path / "caps.json").read_text())) == 1


def test_to_safetensors_refuses_a_used_destination(tiny_caption_model, tmp_path):
    src = tmp_path / "model.bin"
    torch.save(new_to_original(tiny_caption_model.state_dict()), src)
    (tmp_path / "pub").mkdir()
    (tmp_path / "pub" / "keep.txt").write_text("mine")
    from common.errors import InputError

    with pytest.raises(InputError, match="not an empty directory"):
        convert_main(["--to_safetensors", str(src), str(tmp_path / "pub"), "--intra_num_hidden_layers", "2",
                      "--decoder_model", "decoder-tiny"])
    assert (tmp_path / "pub" / "keep.txt").read_text() == "mine"
