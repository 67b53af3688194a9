"""common.distributed: two real gloo processes under torchrun, launcher env parsing, single-process fallback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from common import distributed as D

HERE = Path(__file__).resolve().parent


def test_two_processes_under_torchrun(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_", "SLURM_"))}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE / "ddp_worker.py"), str(tmp_path / "result")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r0, r1 = (json.loads((tmp_path / f"result.{r}.json").read_text()) for r in (0, 1))
    assert (r0["rank"], r1["rank"], r0["world"]) == (0, 1, 2)
    assert r0["seed"] == 7 and r1["seed"] == 8
    assert r0["gathered"] == r1["gathered"] == [{"rank": 0, "sq": 0}, {"rank": 1, "sq": 1}]
    assert r0["mean_float"] == r1["mean_float"] == 1.5
    assert r0["mean_tensor"] == r1["mean_tensor"] == [1.0, 4.0]
    assert r0["params"] == r1["params"], "DDP must keep both ranks' parameters identical"
    assert sorted(r0["shard"] + r1["shard"]) == list(range(10)) and not set(r0["shard"]) & set(r1["shard"])


def test_launch_env_torchrun_slurm_and_none():
    tr = D.read_launch_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    assert (tr.rank, tr.world_size, tr.local_rank, tr.launcher) == (3, 8, 1, "torchrun")
    sl = D.read_launch_env({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
                            "SLURM_NODELIST": "gpu[003-006,010]", "SLURM_JOB_ID": "123"})
    assert (sl.rank, sl.world_size, sl.local_rank, sl.master_addr, sl.master_port, sl.launcher) == \
        (5, 8, 1, "gpu003", "20123", "slurm")
    assert D.read_launch_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}).launcher == "none"
    assert D.read_launch_env({}).world_size == 1
    assert D.first_slurm_host("node7") == "node7"
    assert D.first_slurm_host("a[1-2],b[3]") == "a1"


def test_single_process_fallback(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    info = D.init_distributed(device="cpu")
    assert (info.rank, info.world_size, info.distributed, info.backend) == (0, 1, False, None)
    assert D.is_main_process() and D.get_world_size() == 1
    assert D.all_gather_object("x") == ["x"] and D.all_reduce_mean(2.5) == 2.5
    model = torch.nn.Linear(2, 2)
    assert D.wrap_model(model, info) is model
    sampler = D.make_sampler(list(range(6)), shuffle=True, seed=0)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first and sorted(first) == list(range(6))
    assert D.seed_everything(5) == 5
    D.barrier()
    D.cleanup()
