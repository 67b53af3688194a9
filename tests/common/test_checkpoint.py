"""common.checkpoint: atomic saves, resume bit-identical after a kill, retention, legacy loading, key maps."""
from __future__ import annotations

import argparse
import fractions
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from common import checkpoint as ck
from common.checkpoint import (CheckpointError, CheckpointKeyError, CheckpointManager, atomic_torch_save,
                               extract_state_dict, load_checkpoint_file, load_state_dict_strict, remap_keys)

HERE = Path(__file__).resolve().parent


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))


def _run_trainer(tmp: Path, ckpt: str, out: str, kill_after: int = -1) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(HERE / "resume_train.py"), "--ckpt_dir", str(tmp / ckpt),
           "--out", str(tmp / out), "--steps", "10", "--save_every", "3", "--kill_after", str(kill_after)]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_killed_and_resumed_run_is_bit_identical(tmp_path):
    full = _run_trainer(tmp_path, "full", "full.safetensors")
    assert full.returncode == 0, full.stderr
    killed = _run_trainer(tmp_path, "resumed", "never.safetensors", kill_after=7)
    assert killed.returncode == -9, "the trainer should have been killed by SIGKILL"
    assert not (tmp_path / "never.safetensors").exists()
    assert (tmp_path / "resumed" / "latest").read_text().strip() == "step_00000006"
    resumed = _run_trainer(tmp_path, "resumed", "resumed.safetensors")
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_file(tmp_path / "full.safetensors"), load_file(tmp_path / "resumed.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_crash_mid_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    model = _tiny()
    manager = CheckpointManager(tmp_path, keep_last=3)
    first = manager.save(model=model, step=1)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        manager.save(model=model, step=2)
    assert manager.latest() == first
    assert not (tmp_path / "step_00000002").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_atomic_torch_save_never_truncates_existing_file(tmp_path, monkeypatch):
    target = tmp_path / "w.pt"
    atomic_torch_save({"a": torch.ones(3)}, target)

    def half_write(obj, handle):
        handle.write(b"PK\x03\x04partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ck.torch, "save", half_write)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"a": torch.zeros(3)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt"]


def test_full_state_round_trip_with_tied_weights_and_scaler(tmp_path):
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(5, 4)
            self.head = torch.nn.Linear(4, 5, bias=False)
            self.head.weight = self.emb.weight

    model = Tied()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.head(model.emb(torch.tensor([1, 2]))).sum().backward()
    opt.step()
    scaler = torch.amp.GradScaler("cpu", init_scale=128.0)
    manager = CheckpointManager(tmp_path)
    path = manager.save(model=model, optimizer=opt, scaler=scaler, step=5, epoch=2,
                        metrics={"CIDEr": 1.5}, config={"lr": 0.1}, extra={"loader_pos": 17})
    assert (path / ck.WEIGHTS_NAME).is_file() and json.loads((path / ck.META_NAME).read_text())["step"] == 5

    fresh = Tied()
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    fresh_scaler = torch.amp.GradScaler("cpu")
    state = manager.load(model=fresh, optimizer=fresh_opt, scaler=fresh_scaler)
    assert (state.step, state.epoch, state.metrics, state.config, state.extra) == \
        (5, 2, {"CIDEr": 1.5}, {"lr": 0.1}, {"loader_pos": 17})
    assert torch.equal(fresh.emb.weight, model.emb.weight)
    assert fresh.head.weight is fresh.emb.weight
    assert fresh_scaler.get_scale() == 128.0
    assert torch.equal(fresh_opt.state_dict()["state"][0]["momentum_buffer"],
                       opt.state_dict()["state"][0]["momentum_buffer"])


def test_keeps_last_k_and_best_k(tmp_path):
    model = _tiny()
    manager = CheckpointManager(tmp_path, keep_last=2, keep_best=1, metric="CIDEr", mode="max")
    scores = [0.5, 0.9, 0.3, 0.4, 0.2]
    for step, score in enumerate(scores, start=1):
        manager.save(model=model, step=step, metrics={"CIDEr": score})
    assert [p.name for p in manager.checkpoints()] == ["step_00000002", "step_00000004", "step_00000005"]
    assert manager.best().name == "step_00000002"
    assert manager.latest().name == "step_00000005"
    low = CheckpointManager(tmp_path / "min", keep_last=1, keep_best=1, metric="loss", mode="min")
    for step, loss in enumerate([3.0, 1.0, 2.0], start=1):
        low.save(model=model, step=step, metrics={"loss": loss})
    assert [p.name for p in low.checkpoints()] == ["step_00000002", "step_00000003"]


def test_load_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        CheckpointManager(tmp_path / "empty").load(model=_tiny())


def test_legacy_pickles_load_weights_only_and_untrusted_objects_are_refused(tmp_path):
    model = _tiny()
    legacy = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, legacy)
    loaded = load_checkpoint_file(legacy)
    sd = remap_keys(extract_state_dict(loaded), strip_prefix="module.")
    assert load_state_dict_strict(_tiny(), sd).summary() == "loaded 4/4 keys"

    # The originals pickled their argparse namespace next to the weights: plain data, loads untrusted.
    with_args = tmp_path / "pytorch_model.bin"
    torch.save({"state_dict": model.state_dict(), "args": argparse.Namespace(lr=0.1)}, with_args)
    assert load_checkpoint_file(with_args)["args"].lr == 0.1

    # Anything callable beyond the data allow-list needs --trust_checkpoint.
    risky = tmp_path / "risky.bin"
    torch.save({"state_dict": model.state_dict(), "when": fractions.Fraction(1, 3)}, risky)
    with pytest.raises(CheckpointError, match="--trust_checkpoint") as err:
        load_checkpoint_file(risky)
    assert str(risky) in str(err.value) and "fractions.Fraction" in str(err.value)
    assert "\n" not in str(err.value)
    assert load_checkpoint_file(risky, trust=True)["when"] == fractions.Fraction(1, 3)


def test_missing_and_corrupt_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint_file(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pth"):
        load_checkpoint_file(bad)


def test_remap_keys_rules_and_collisions():
    sd = {"module.enc.layer.0.w": 1, "module.enc.layer.1.w": 2, "module.aux.x": 3, "other": 4}
    out = remap_keys(sd, strip_prefix="module.", rename=[(r"layer\.(\d+)", r"layers.\1")],
                     drop=[r"^module\.aux\."], add_prefix="model.")
    assert out == {"model.enc.layers.0.w": 1, "model.enc.layers.1.w": 2, "model.other": 4}
    with pytest.raises(ValueError, match="both map to"):
        remap_keys({"module.a": 1, "a": 2}, strip_prefix="module.")


def test_key_report_fails_loudly_unless_told_otherwise():
    model = _tiny()
    sd = dict(model.state_dict())
    sd.pop("1.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["0.weight"] = torch.zeros(5, 4)
    with pytest.raises(CheckpointKeyError) as err:
        load_state_dict_strict(_tiny(), sd, source="ckpt.pth")
    message = str(err.value)
    assert "1 missing, 1 unexpected, 1 shape-mismatched" in message
    assert "1.bias" in message and "extra.weight" in message and "0.weight checkpoint[5, 4] vs model[3, 4]" in message
    target = _tiny()
    report = load_state_dict_strict(target, sd, strict=False)
    assert report.loaded == 2 and report.total == 4 and not report.ok
    assert torch.equal(target[1].weight, model[1].weight)


def test_strict_load_into_meta_model_materialises_weights():
    with torch.device("meta"):
        meta_model = _tiny()
    source = _tiny()
    report = load_state_dict_strict(meta_model, source.state_dict())
    assert report.ok and not meta_model[0].weight.is_meta
    assert torch.equal(meta_model[0].weight, source[0].weight)
