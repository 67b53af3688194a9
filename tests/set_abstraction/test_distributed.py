"""train.py under torchrun --nproc_per_node=2 on CPU (gloo)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def test_torchrun_two_processes_cpu(syn_dir, tmp_path, train_argv):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    argv = train_argv(syn_dir, tmp_path, "--exp_id", "DDP", "--num_epochs", "2", "--max_step", "3", "--device", "cpu")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "set_abstraction.train", *argv], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    ckpt = torch.load(next((tmp_path / "ckpt").rglob("*_checkpoint.pth.tar")), weights_only=True)
    assert ckpt["epoch"] == 2 and len(ckpt["state_dict"]) == 22
    state_dirs = list((tmp_path / "ckpt").rglob("step_*"))
    assert [p.name for p in state_dirs] == ["step_00000006"]  # 2 epochs x 3 steps, same on both ranks
    assert "Starting experiment: AbstractionEmbedding_DDP_moments" in run.stderr
