"""Publishable checkpoints (issue 16): save_pretrained / from_pretrained and convert --to_safetensors, no pickle."""
from __future__ import annotations

import json
import pickle
from types import SimpleNamespace

import pytest
import torch

from common.checkpoint import CheckpointError
from common.errors import InputError
from sc_helpers import train_argv
from spatial_captioning import convert, models
from spatial_captioning.models import CaptionModel, RelationTransformerModel, TransformerModel
from spatial_captioning.opts import parse_train_opt
from spatial_captioning.training import Trainer

ORT_SMALL = dict(caption_model="relation_transformer", vocab_size=30, seq_length=16, input_encoding_size=32,
                 img_feat_size=24, num_layers=2, ff_size=48, heads=8, dropout=0.1, use_box=True)


def _inputs(n: int, regions: int, width: int, box_dim: int | None, seed: int = 0) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, regions, width, generator=gen)
    masks = torch.ones(n, regions)
    masks[0, regions - 2:] = 0
    if box_dim is None:  # relative boxes for ORT
        xy = torch.rand(n, regions, 2, generator=gen) * 0.5
        boxes = torch.cat([xy, xy + 0.2], -1)
    else:
        boxes = torch.rand(n, regions, box_dim, generator=gen)
    labels = torch.randint(1, 20, (n, 10), generator=gen)
    labels[:, 0] = 0
    return feats, masks, boxes, labels


def _outputs(model: CaptionModel, feats, masks, boxes, labels) -> tuple:
    with torch.no_grad():
        logprobs = model(feats, labels, masks, boxes)
        seq, _ = model(feats, masks, boxes, opt={"beam_size": 2}, mode="sample")
    return logprobs, seq


def test_trained_tiny_model_round_trip_with_card(syn, tmp_path):
    trainer = Trainer(parse_train_opt(train_argv(syn, tmp_path / "run", max_iters=3, extra=["--batch_size", "2"])))
    trainer.run()
    model = trainer.model.eval()
    results = tmp_path / "t_test.json"
    results.write_text(json.dumps({"overall": {"CIDEr": 1.234, "Bleu_4": 0.5}, "imgToEval": {}}))
    out = model.save_pretrained(tmp_path / "pub", metrics_file=results)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["caption_model"] == "spatial_pe" and config["num_grids"] == 36 and config["use_grid"] is True
    assert "| CIDEr | 1.234 |" in (out / "README.md").read_text()
    loaded = TransformerModel.from_pretrained(out)
    assert not loaded.training and loaded.unk_index == model.unk_index
    feats, masks, boxes, labels = _inputs(3, 6, 32, 36)
    for a, b in zip(_outputs(model, feats, masks, boxes, labels), _outputs(loaded, feats, masks, boxes, labels)):
        assert torch.equal(a, b)
    with pytest.raises(CheckpointError, match="not a RelationTransformerModel"):
        RelationTransformerModel.from_pretrained(out)


def test_save_pretrained_refuses_results_without_scores(tmp_path):
    model = models.setup(SimpleNamespace(**ORT_SMALL))
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"imgToEval": {}}))
    with pytest.raises(InputError, match="overall"):
        model.save_pretrained(tmp_path / "pub", metrics_file=bad)
    assert not (tmp_path / "pub").exists()


@pytest.mark.parametrize("with_infos", [False, True], ids=["ort-shapes-only", "spatial_pe-with-infos"])
def test_to_safetensors_then_load_without_pickle(tmp_path, monkeypatch, with_infos):
    torch.manual_seed(0)
    if with_infos:
        opt = dict(caption_model="spatial_pe", vocab_size=30, seq_length=8, input_encoding_size=32, img_feat_size=24,
                   num_layers=1, ff_size=48, heads=4, dropout=0.1, num_grids=16, use_grid=True, cross_attn="xlinear")
        box_dim = 16
    else:
        opt, box_dim = dict(ORT_SMALL), None
    source = models.setup(SimpleNamespace(**opt)).eval()
    # the original's layout: a DataParallel state dict (`module.` prefixes) saved with torch.save
    src = tmp_path / "model-best.pth"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, src)
    argv = ["--to_safetensors", str(src), str(tmp_path / "pub")]
    if with_infos:
        infos = tmp_path / "infos_x-best.pkl"
        vocab = {str(i): f"w{i}" for i in range(1, 31)}
        vocab["30"] = "UNK"  # the last entry, as prepro_labels writes it
        infos.write_bytes(pickle.dumps({"opt": SimpleNamespace(**opt).__dict__, "vocab": vocab}))
        argv += ["--infos_path", str(infos)]
    assert convert.main(argv) == 0
    with monkeypatch.context() as m:
        m.setattr(pickle, "load", _raise)
        m.setattr(pickle, "loads", _raise)
        m.setattr(pickle, "Unpickler", _raise)
        m.setattr(torch, "load", _raise)
        loaded = CaptionModel.from_pretrained(tmp_path / "pub")
    assert type(loaded) is type(source)
    if with_infos:
        assert loaded.heads == 4 and loaded.unk_index == 30
    feats, masks, boxes, labels = _inputs(2, 5, 24, box_dim)
    for a, b in zip(_outputs(source, feats, masks, boxes, labels), _outputs(loaded, feats, masks, boxes, labels)):
        assert torch.equal(a, b)
    with pytest.raises(InputError, match="not empty"):
        convert.main(argv)


def _raise(*args, **kwargs):
    raise AssertionError("pickle used on the loading path")
