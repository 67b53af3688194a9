"""Training: exact resume, torchrun on CPU, step count, refused flags and options (pitfalls 14-16, 19-20)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from visualcomet.scripts import run_finetuning
from visualcomet.scripts.run_finetuning import build_parser
from visualcomet.training import train

REPO = Path(__file__).resolve().parents[2]


def _weights(d: Path) -> dict[str, torch.Tensor]:
    from visualcomet.model import VisualCometLMHead

    # the final directory is the publishable model.safetensors layout (issue 16); it stores the tied wte once
    return VisualCometLMHead.from_pretrained(d).state_dict()


def test_kill_and_resume_is_bit_identical(vc_data, vc_train_argv, tmp_path):
    full = tmp_path / "full"
    res = train(build_parser().parse_args(vc_train_argv(vc_data, full, "--save_steps", "3", "--eval_all_checkpoints",
                                                        steps=7)))
    assert res["global_step"] == 7  # exactly --max_steps (pitfall 16 fixed)
    part = tmp_path / "part"
    argv = vc_train_argv(vc_data, part, "--save_steps", "3", steps=7)
    assert train(build_parser().parse_args(argv), _stop_after=4) == {"stopped_at": 4}  # "killed" after step 4
    train(build_parser().parse_args(argv + ["--resume"]))  # resumes from the step-3 checkpoint
    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in full.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    metrics = json.loads((full / "metrics.json").read_text())
    assert {"perplexity_0_3", "loss_0_3", "perplexity_inference", "loss_inference", "perplexity_3_inference",
            "perplexity_6_inference"} <= set(metrics)
    log = [json.loads(line) for line in (full / "train_log.jsonl").read_text().splitlines()]
    assert any("loss" in r and "lr" in r for r in log) and any("eval_loss" in r for r in log)
    assert (full / "checkpoint-3" / "added_tokens.json").is_file()
    # the common experiment log (issue 16): train loss/lr every --logging_steps, validation at 3, 6 and the end
    from common.experiment_log import read_metrics

    records = read_metrics(full)
    assert {(r["split"], r["name"], r["step"]) for r in records} >= {
        ("train", "loss", 5), ("train", "lr", 5), ("val", "loss", 3), ("val", "perplexity", 6), ("val", "loss", 7)}
    assert "| perplexity_inference |" in (full / "README.md").read_text()  # the card shows the final metrics


def test_torchrun_two_processes_cpu(vc_data, vc_train_argv, tmp_path):
    import socket

    with socket.socket() as sock:  # a free port: other suites may run torchrun at the same time
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           str(REPO / "visualcomet" / "scripts" / "run_finetuning.py"),
           *vc_train_argv(vc_data, out, "--per_gpu_eval_batch_size", "48", "--save_steps", "2", steps=3)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO / "visualcomet", capture_output=True, text=True, timeout=500, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["perplexity_inference"] > 1.0 and "perplexity_0_2" in metrics
    assert (out / "model.safetensors").is_file() and (out / "checkpoint-2" / "config.json").is_file()
    assert (out / "resume" / "step_00000002").is_dir()  # resumable state written once, by rank 0


def test_mode_all_and_options(vc_data, vc_train_argv, tmp_path):
    res = train(build_parser().parse_args(vc_train_argv(
        vc_data, tmp_path / "all", "--mode", "all", "--use_bbox", "--no_subject_ids", "--eval_all_batches",
        "--cache_dir", str(tmp_path / "not" / "yet"), steps=2)))
    assert res["global_step"] == 2
    cfg = json.loads((tmp_path / "all" / "config.json").read_text())
    assert cfg["use_bbox"] is True and cfg["use_subject_ids"] is False and cfg["max_event"] > 0
    assert any((tmp_path / "not" / "yet").iterdir())  # --cache_dir created (pitfall 19)


@pytest.mark.parametrize("flags, message", [
    (["--use_obj_loss"], "--use_obj_loss"),
    (["--mlm"], "--mlm"),
    (["--no_text", "--mode", "all"], "--no_text"),
    (["--fp16_opt_level", "O2"], "--fp16_opt_level"),
    (["--do_train", "false"], "--do_train"),
])
def test_refused_flags_are_one_line(vc_data, vc_train_argv, tmp_path, capsys, flags, message):
    from common.errors import run_cli

    with pytest.raises(SystemExit) as err:
        run_cli(run_finetuning.main, vc_train_argv(vc_data, tmp_path / "x", *flags))
    assert err.value.code == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and message in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="on CUDA --fp16 is supported")
def test_fp16_refused_without_cuda(vc_data, vc_train_argv, tmp_path):
    from common.errors import InputError

    with pytest.raises(InputError, match="CUDA"):
        train(build_parser().parse_args(vc_train_argv(vc_data, tmp_path / "f", "--fp16")))


def test_lower_case_and_no_final_eval(vc_data, vc_train_argv, tmp_path):
    out = tmp_path / "lc"
    res = train(build_parser().parse_args(vc_train_argv(vc_data, out, "--do_lower_case", "--do_eval", "false",
                                                        steps=1)))
    assert "perplexity" not in res and not (out / "metrics.json").exists()
    assert json.loads((out / "tokenizer_config.json").read_text())["do_lower_case"] is True


def test_output_dir_not_overwritten_and_bool_flags(vc_data, vc_train_argv, tmp_path):
    from common.errors import InputError

    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="overwrite_output_dir"):
        train(build_parser().parse_args(vc_train_argv(vc_data, out, steps=1)))
    args = build_parser().parse_args(vc_train_argv(vc_data, out, "--do_eval", "False"))
    assert args.do_eval is False  # proper booleans (pitfall 15)


def test_validation_drops_the_last_partial_batch(vc_data, vc_tokenizer, vc_paths):
    """Pitfall 17: eval loss = mean of batch means over full batches (K); --eval_all_batches is token-weighted (O)."""
    import argparse

    from visualcomet import data as vdata
    from visualcomet.model import VisualCometLMHead, make_config
    from visualcomet.training import evaluate

    torch.manual_seed(0)
    model = VisualCometLMHead(make_config(vocab_size=len(vc_tokenizer), n_layer=1, n_head=2, n_embd=32)).eval()
    lay, splits = vdata.build_finetune_data(vc_paths, vc_tokenizer, 40)
    ex, lab, recs = splits["val"]
    ds = vdata.VCGDataset(recs, ex, lab, vc_tokenizer, vc_paths)
    args = argparse.Namespace(eval_all_batches=False, fp16=False, bf16=False)
    with torch.no_grad():
        means = [float(model(**{k: v for k, v in vdata.collate([ds[i] for i in range(s, s + 40)]).items()
                                if k != "index"})["loss"]) for s in (0, 40)]
    got = evaluate(model, ds, 40, torch.device("cpu"), args)["loss"]
    model.eval()
    assert len(ds) == 96 and got == pytest.approx(sum(means) / 2, rel=1e-6)  # records 80..95 ignored
    args.eval_all_batches = True
    assert evaluate(model, ds, 40, torch.device("cpu"), args)["loss"] != pytest.approx(got, rel=1e-9)


@pytest.mark.parametrize("layout", ["hub_gpt2_model", "gpt2_lm_head_safetensors"])
def test_finetune_from_plain_gpt2_weights(vc_data, vc_tokenizer, vc_train_argv, tmp_path, layout):
    """--model_name_or_path gpt2-style: GPT-2 weights kept, visual modules new, vocabulary resized to 50257+60."""
    import shutil

    from transformers import GPT2Config, GPT2LMHeadModel

    base = len(vc_tokenizer.encoder)
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=base, n_layer=2, n_head=2, n_embd=64, n_positions=64,
                                      bos_token_id=None, eos_token_id=None))
    src = tmp_path / "gpt2"
    if layout == "hub_gpt2_model":  # the hub's gpt2 checkpoint: GPT2Model keys (no 'transformer.') + attn.bias
        src.mkdir()
        sd = {k[len("transformer."):]: v for k, v in gpt2.state_dict().items() if k.startswith("transformer.")}
        for i in range(2):
            sd[f"h.{i}.attn.bias"] = torch.tril(torch.ones(64, 64)).view(1, 1, 64, 64)
        torch.save(sd, src / "pytorch_model.bin")
        gpt2.config.to_json_file(src / "config.json")
    else:
        gpt2.save_pretrained(src)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(vc_data / "gpt2-tiny" / name, src / name)
    (src / "config.json").write_text(json.dumps({**json.loads((src / "config.json").read_text()), "feature_dim": 2048}))
    argv = vc_train_argv(vc_data, tmp_path / "out", steps=1)
    argv[argv.index("--model_name_or_path") + 1] = str(src)
    train(build_parser().parse_args(argv + ["--learning_rate", "0"]))
    out = _weights(tmp_path / "out")
    assert out["transformer.wte.weight"].shape[0] == len(vc_tokenizer)
    assert torch.equal(out["transformer.wte.weight"][:base], gpt2.transformer.wte.weight.detach())
    assert torch.equal(out["transformer.h.1.mlp.c_fc.weight"], gpt2.transformer.h[1].mlp.c_fc.weight.detach())
