"""convert.py --check-keys on every key-file section, and the released checkpoint directory layout (spec 6.1)."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.errors import InputError
from visualcomet import convert
from visualcomet.convert import parse_key_file

REPO = Path(__file__).resolve().parents[2]
KEYS = REPO / "tests" / "fixtures" / "visualcomet_state_dict_keys.txt"


def test_check_keys_cli_prints_loaded_all(capsys):
    assert convert.main(["--check-keys", str(KEYS)]) == 0
    out = capsys.readouterr().out.splitlines()
    n = len(parse_key_file(KEYS)[0])
    assert n == 168
    assert f"section 0 (default): loaded {n}/{n} keys" in out
    assert "section 0 (use_bbox): loaded 170/170 keys" in out
    assert "section 0 (no_subject_ids): loaded 167/167 keys" in out
    assert len(out) == 3 * len(parse_key_file(KEYS))


def test_check_keys_as_module_exits_zero():
    proc = subprocess.run([sys.executable, "-m", "visualcomet.convert", "--check-keys", str(KEYS)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "loaded 168/168 keys" in proc.stdout


def test_check_keys_fails_on_bad_key_file(tmp_path, capsys):
    text = KEYS.read_text().replace("transformer.ln_f.bias\t[768]", "transformer.ln_f.bias\t[769]")
    bad = tmp_path / "keys.txt"
    bad.write_text(text + "transformer.extra.weight\t[3]\n")
    assert convert.main(["--check-keys", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "transformer.ln_f.bias" in out and "transformer.extra.weight" in out


def write_released_checkpoint(directory: Path, tokenizer, feature_dim: int = 2048, seed: int = 0) -> dict:
    """A tiny model saved exactly like transformers 2.4.1's run_finetuning.py checkpoint-N/ (spec 6.1)."""
    from visualcomet.model import VisualCometLMHead, make_config

    torch.manual_seed(seed)
    cfg = make_config(vocab_size=len(tokenizer), n_layer=2, n_head=2, n_embd=64, feature_dim=feature_dim,
                      max_event=7, max_place=5, max_inference=7)
    model = VisualCometLMHead(cfg)
    sd = {}
    for k, v in model.state_dict().items():  # original order: attn.bias buffer after ln_1 of each block
        sd[k] = v.clone()
        if k.endswith("ln_1.bias"):
            sd[k.replace("ln_1.bias", "attn.bias")] = torch.tril(torch.ones(1024, 1024)).view(1, 1, 1024, 1024)
    sd["lm_head.weight"] = sd["transformer.wte.weight"]  # tied: same storage
    directory.mkdir(parents=True)
    torch.save(sd, directory / "pytorch_model.bin", _use_new_zipfile_serialization=False)  # torch 1.5 format
    config = {"architectures": ["GPT2VisionAttentiveLMHead"], "attn_pdrop": 0.1, "bos_token_id": 0,
              "do_sample": False, "embd_pdrop": 0.1, "eos_token_ids": 0, "finetuning_task": None,
              "id2label": {"0": "LABEL_0"}, "initializer_range": 0.02, "is_decoder": False,
              "label2id": {"LABEL_0": 0}, "layer_norm_epsilon": 1e-05, "length_penalty": 1.0, "max_length": 20,
              "model_type": "gpt2", "n_ctx": 1024, "n_embd": 64, "n_head": 2, "n_layer": 2, "n_positions": 1024,
              "num_beams": 1, "num_labels": 1, "num_return_sequences": 1, "output_attentions": False,
              "output_hidden_states": False, "output_past": True, "pad_token_id": 0, "pruned_heads": {},
              "repetition_penalty": 1.0, "resid_pdrop": 0.1, "summary_activation": None, "summary_first_dropout": 0.1,
              "summary_proj_to_labels": True, "summary_type": "cls_index", "summary_use_proj": True,
              "temperature": 1.0, "top_k": 50, "top_p": 1.0, "torchscript": False, "use_bfloat16": False,
              "vocab_size": len(tokenizer), "max_event": 7, "max_place": 5, "max_inference": 7,
              "use_person_ids": True, "use_subject_ids": True, "use_bbox": False}
    if feature_dim != 2048:
        config["feature_dim"] = feature_dim
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save_pretrained(directory)
    torch.save(argparse.Namespace(device=torch.device("cpu"), max_seq_len=40), directory / "training_args.bin")
    return sd


def test_released_checkpoint_directory_loads_and_runs(vc_data, vc_tokenizer, tmp_path):
    from visualcomet.model import load_pretrained
    from visualcomet.scripts import run_generation, run_rank

    ckpt = tmp_path / "experiments" / "image-inference-80000-ckpt"
    sd = write_released_checkpoint(ckpt, vc_tokenizer)
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(
        ["config.json", "pytorch_model.bin", "vocab.json", "merges.txt", "added_tokens.json",
         "special_tokens_map.json", "tokenizer_config.json", "training_args.bin"])
    model, loaded = load_pretrained(ckpt, require_weights=True)
    assert loaded and model.config.max_event == 7
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert run_generation.main(["--data_dir", str(vc_data), "--model_name_or_path", str(ckpt), "--split", "val",
                                "--max_seq_len", "40", "--num_samples", "2", "--length", "4",
                                "--gen_batch_size", "16", "--no_cuda"]) == 0
    gens = json.loads((ckpt / "val_sample_1_num_2_top_k_0_top_p_0.9.json").read_text())
    assert len(gens) == 3 * 16 and all(len(g["generations"]) == 2 for g in gens)
    assert run_rank.main(["--data_dir", str(vc_data), "--model_name_or_path", str(ckpt), "--split", "val",
                          "--max_seq_len", "40", "--rank_mode", "random_4", "--no_cuda"]) == 0
    first = json.loads((ckpt / "val_rank_random_4.json").read_text())
    assert 0.0 <= first["mean_recall"] <= 1.0
    # no training cache needed, and --overwrite_cache works (pitfall 9); seeded negatives reproduce
    assert run_rank.main(["--data_dir", str(vc_data), "--model_name_or_path", str(ckpt), "--split", "val",
                          "--max_seq_len", "40", "--rank_mode", "random_4", "--no_cuda", "--overwrite_cache",
                          "--overwrite_output"]) == 0
    assert json.loads((ckpt / "val_rank_random_4.json").read_text()) == first


def test_convert_file_writes_loadable_directory(vc_tokenizer, tmp_path):
    from visualcomet.model import load_pretrained

    sd = write_released_checkpoint(tmp_path / "orig", vc_tokenizer, feature_dim=16)
    convert.main(["--src", str(tmp_path / "orig" / "pytorch_model.bin"), "--dst", str(tmp_path / "new")])
    model, loaded = load_pretrained(tmp_path / "new", require_weights=True)
    assert loaded and torch.equal(model.transformer.wte.weight, sd["transformer.wte.weight"])
    assert (tmp_path / "new" / "added_tokens.json").is_file()


def _outputs(model, vocab: int, feature_dim: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (2, 12), generator=g)
    mask = torch.zeros(2, 15, dtype=torch.long)
    mask[:, :3] = 1
    with torch.no_grad():
        return model.eval()(ids, torch.randn(2, 15, feature_dim, generator=g), mask,
                            torch.randint(0, vocab, (2, 15), generator=g))["logits"]


def _no_pickle(monkeypatch) -> None:
    import pickle

    def refuse(*_, **__):
        raise AssertionError("pickle used on the safetensors loading path")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)


def test_save_pretrained_round_trip_with_card(vc_tokenizer, tmp_path):
    """Issue 16: a briefly trained tiny model -> save_pretrained -> from_pretrained gives equal outputs."""
    from visualcomet.model import VisualCometLMHead, make_config
    from visualcomet.optim import OriginalAdamW

    torch.manual_seed(0)
    model = VisualCometLMHead(make_config(vocab_size=len(vc_tokenizer), n_layer=2, n_head=2, n_embd=32,
                                          feature_dim=16, max_event=7, max_place=5, max_inference=7))
    opt = OriginalAdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, len(vc_tokenizer), (4, 12))
    for _ in range(2):  # "trained": the weights are no longer their initialisation
        model(ids, labels=ids)["loss"].backward()
        opt.step()
        opt.zero_grad()
    results = tmp_path / "metrics.json"
    results.write_text(json.dumps({"perplexity_inference": 12.5, "loss_inference": 2.53, "note": "text"}))
    out = tmp_path / "published"
    model.save_pretrained(out, metrics_file=results, tokenizer=vc_tokenizer)
    assert {"config.json", "model.safetensors", "README.md", "vocab.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "pytorch_model.bin").exists()
    card = (out / "README.md").read_text()
    assert "VisualCOMET" in card and "| perplexity_inference | 12.5 |" in card and "from_pretrained" in card
    assert json.loads((out / "config.json").read_text())["paper"] == "visualcomet"
    loaded = VisualCometLMHead.from_pretrained(out)
    assert torch.equal(_outputs(model, len(vc_tokenizer), 16), _outputs(loaded, len(vc_tokenizer), 16))
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()  # tied again


def test_to_safetensors_then_loading_runs_no_pickle(vc_tokenizer, tmp_path, monkeypatch, capsys):
    """--to_safetensors on a synthesised 2.4.1 directory; the result loads with every pickle entry point refused."""
    from visualcomet.model import VisualCometLMHead, load_pretrained

    sd = write_released_checkpoint(tmp_path / "orig", vc_tokenizer, feature_dim=16)
    original, _ = load_pretrained(tmp_path / "orig", require_weights=True)
    assert convert.main(["--to_safetensors", str(tmp_path / "orig"), str(tmp_path / "st")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "st" / "model.safetensors").is_file() and (tmp_path / "st" / "README.md").is_file()
    _no_pickle(monkeypatch)
    model = VisualCometLMHead.from_pretrained(tmp_path / "st")
    assert torch.equal(model.transformer.wte.weight, sd["transformer.wte.weight"])
    assert torch.equal(_outputs(model, len(vc_tokenizer), 16), _outputs(original, len(vc_tokenizer), 16))
    # nothing is replaced: a second conversion into the same directory is refused
    monkeypatch.undo()
    with pytest.raises(InputError, match="exists"):
        convert.main(["--to_safetensors", str(tmp_path / "orig"), str(tmp_path / "st")])
