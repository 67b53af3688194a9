"""Publishable checkpoints (issue 16): save_pretrained / from_pretrained round trips and
``python -m singularity.convert --to_safetensors`` without any pickle on the loading path."""
import importlib.util
import json
import pickle
from pathlib import Path

import pytest
import torch

from common.errors import run_cli

HERE = Path(__file__).resolve().parent
TINY = ["vit_config=configs/beit_tiny.json", "bert_config=configs/config_bert_tiny.json", "image_res=32",
        "embed_dim=32"]


def _to_original_layout():
    """test_convert.py's independent inverse of the key conversion (authors' transformers 4.15 / xbert names)."""
    spec = importlib.util.spec_from_file_location("sl_test_convert", HERE / "test_convert.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.to_original_layout


def _inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(3, 1, 3, 32, 32, generator=gen)
    ids = torch.randint(5, 64, (3, 6), generator=gen)
    ids[:, 0] = 2
    mask = torch.ones_like(ids)
    mask[2, 4:] = 0
    return images, {"input_ids": ids * mask, "attention_mask": mask}


def _retrieval_outputs(model):
    images, text = _inputs()
    with torch.no_grad():
        tokens, pooled = model.encode_image(images)
        hidden, cls = model.encode_text(text)
        sim, _ = model.get_sim(pooled, cls)
        return torch.cat([sim.flatten(), model.itm_logits(hidden, text["attention_mask"], tokens).flatten()])


def _qa_outputs(model):
    images, text = _inputs()
    answers = torch.randint(5, 64, (5, 3), generator=torch.Generator().manual_seed(1))
    answers[:, 0] = 2
    ids, probs = model.rank_answers(images, text, answers, torch.ones_like(answers), 3)
    return torch.cat([ids.float().flatten(), probs.flatten()])


def _no_pickle(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used on the from_pretrained path")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)


def test_trained_model_round_trip(syn_dir, tiny_config, tmp_path, monkeypatch):
    """Train the demo's tiny retrieval model briefly, publish it with its results, read it back."""
    from singularity.models.singularity import SingularityRetrieval
    from singularity.tasks.retrieval import run_retrieval
    from singularity.tasks_common import build_model_for_task, load_pretrained

    out = tmp_path / "run"
    run_retrieval(tiny_config(syn_dir, "ret_syn", f"output_dir={out}", "scheduler.epochs=1",
                              "eval_after_training=False", "itm_batch_size=64", "--report_to", "tensorboard"))
    assert any((out / "tensorboard").glob("events.out.tfevents.*"))  # --report_to mirrors metrics.jsonl
    config = tiny_config(syn_dir, "ret_syn")
    model = build_model_for_task("retrieval", config)
    load_pretrained(model, torch.load(out / "ckpt_best.pth", weights_only=True)["model"])
    model.cls_token_id, model.mask_token_id = 7, 9
    model.eval()
    published = model.save_pretrained(tmp_path / "pub", metrics_file=out / "eval_res_best.json")
    assert sorted(p.name for p in published.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = (published / "README.md").read_text()
    r_mean = json.loads((out / "eval_res_best.json").read_text())["syn_test/"]["r_mean"]
    assert f"| syn_test/r_mean | {r_mean:.4g} |" in card and "SingularityRetrieval.from_pretrained" in card
    _no_pickle(monkeypatch)
    loaded = SingularityRetrieval.from_pretrained(published)
    assert (loaded.cls_token_id, loaded.mask_token_id) == (7, 9) and not loaded.training
    assert torch.equal(_retrieval_outputs(loaded), _retrieval_outputs(model))


@pytest.mark.parametrize("task", ["pretrain", "vqa"])
def test_random_model_round_trip(tiny_model_factory, tmp_path, monkeypatch, task):
    from singularity.models.singularity import SingularityPretrain
    from singularity.models.vqa import SingularityQA

    model = tiny_model_factory(task, attn_implementation="eager").eval()
    model.save_pretrained(tmp_path / task)
    _no_pickle(monkeypatch)
    cls = SingularityPretrain if task == "pretrain" else SingularityQA
    loaded = cls.from_pretrained(tmp_path / task)
    assert loaded.bert_config._attn_implementation == "eager"
    if task == "pretrain":  # the MLM decoder stays tied to the word embeddings
        emb = loaded.text_encoder.bert.embeddings.word_embeddings.weight
        assert loaded.text_encoder.cls.predictions.decoder.weight is emb
        assert torch.equal(_retrieval_outputs(loaded), _retrieval_outputs(model))
    else:
        assert torch.equal(_qa_outputs(loaded), _qa_outputs(model))
    with pytest.raises(Exception, match="not a SingularityRetrieval|holds a"):
        from singularity.models.singularity import SingularityRetrieval
        SingularityRetrieval.from_pretrained(tmp_path / task)


def test_to_safetensors_of_an_original_layout_file(tiny_model_factory, tmp_path, monkeypatch, capsys):
    from singularity.convert import main
    from singularity.models.singularity import SingularityRetrieval

    source = tiny_model_factory("retrieval").eval()
    original = _to_original_layout()(source.state_dict(), pretrain=False)
    assert any("attention.attention.query" in k for k in original)
    src = tmp_path / "authors.pth"
    torch.save({"model": original, "epoch": 3}, src)
    dst = tmp_path / "published"
    run_cli(main, ["--to_safetensors", str(src), str(dst), "--task", "retrieval", *TINY])  # exit 0: returns
    assert "wrote" in capsys.readouterr().out
    _no_pickle(monkeypatch)
    loaded = SingularityRetrieval.from_pretrained(dst)
    loaded.cls_token_id, loaded.mask_token_id = source.cls_token_id, source.mask_token_id
    torch.testing.assert_close(_retrieval_outputs(loaded), _retrieval_outputs(source), atol=0, rtol=0)


@pytest.mark.parametrize("case", ["dst-not-empty", "src-missing", "src-malicious"])
def test_to_safetensors_bad_inputs(tmp_path, capsys, case):
    import os

    src, dst = tmp_path / "in.pth", tmp_path / "out"
    marker = tmp_path / "pwned"
    if case == "dst-not-empty":
        torch.save({"model": {"x": torch.zeros(1)}}, src)
        dst.mkdir()
        (dst / "keep.txt").write_text("mine")
    elif case == "src-malicious":
        class Payload:
            def __reduce__(self):
                return os.system, (f"touch {marker}",)

        src.write_bytes(pickle.dumps({"model": Payload()}))
    from singularity.convert import main

    with pytest.raises(SystemExit) as exit_:
        run_cli(main, ["--to_safetensors", str(src), str(dst), *TINY])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert {"dst-not-empty": "out", "src-missing": "in.pth", "src-malicious": "in.pth"}[case] in err
    assert not marker.exists()
    if case == "dst-not-empty":
        assert (dst / "keep.txt").read_text() == "mine" and sorted(p.name for p in dst.iterdir()) == ["keep.txt"]
    else:
        assert not dst.exists()
