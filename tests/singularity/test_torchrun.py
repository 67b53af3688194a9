"""Two CPU processes under torchrun (gloo): DDP training + sharded re-ranking all-reduced (pitfalls 9.4/9.5 F)."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_torchrun_two_processes(syn_dir, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--rdzv_backend=c10d", "--rdzv_endpoint=localhost:0", "-m", "singularity.tasks.retrieval",
           str(syn_dir / "configs" / "ret_syn.yaml"), f"output_dir={out}", "scheduler.epochs=1",
           "eval_after_training=False", "--local_rank=0"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "eval_res_latest.json").read_text())
    assert 0 <= res["syn_test/"]["img_r1"] <= 100
    assert (out / "train.log").is_file() and (out / "train.log.rank1").is_file()
    log = (out / "train.log").read_text()
    assert "[5/6]" in log  # 192 clips / (2 ranks x 16) = 6 steps per rank
