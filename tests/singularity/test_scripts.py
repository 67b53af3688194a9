"""Shell scripts: positional arguments, output-dir rules, launch commands (spec 2.2, pitfall 9.15)."""
import os
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "singularity" / "scripts"


def run(script, *args, exp_dir, **env):
    full = dict(os.environ, SL_EXP_DIR=str(exp_dir), SL_DRY_RUN="1", HOSTNAME="host", **env)
    return subprocess.run(["bash", str(SCRIPTS / script), *args], capture_output=True, text=True, env=full)


def test_train_scripts_commands(tmp_path):
    proc = run("train_ret.sh", "e1", "msrvtt", "2", "local", "pretrained_path=/x.pth", exp_dir=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cmd = proc.stdout
    assert "torchrun --nnodes=1 --nproc_per_node=2 --rdzv_backend=c10d --rdzv_endpoint=host:40000" in cmd
    assert "tasks/retrieval.py" in cmd and "configs/ret_msrvtt.yaml" in cmd
    assert f"output_dir={tmp_path}/ret_msrvtt/msrvtt_e1" in cmd and cmd.rstrip().endswith("pretrained_path=/x.pth")
    assert "wandb.enable=False" in cmd  # optional, off by default (pitfall 9.14 F)
    assert not (tmp_path / "ret_msrvtt").exists()  # SL_DRY_RUN=1 creates nothing (issue 11)
    (tmp_path / "ret_msrvtt" / "msrvtt_e1").mkdir(parents=True)
    (tmp_path / "ret_msrvtt" / "msrvtt_e1" / "ckpt_best.pth").write_bytes(b"x")
    again = run("train_ret.sh", "e1", "msrvtt", "2", "local", exp_dir=tmp_path)
    assert again.returncode == 1 and "already exist. Exit." in again.stdout
    pt = run("pretrain.sh", "x", "webvid_cc3m", "3", "local", exp_dir=tmp_path, MASTER_PORT="41234")
    assert "train_corpus=webvid_cc3m" in pt.stdout and "host:41234" in pt.stdout
    assert f"{tmp_path}/pt_webvid_cc3m/webvid_cc3m_x" in pt.stdout
    qa = run("train_vqa.sh", "x", "anet", "1", "slurm", exp_dir=tmp_path, SLURM_JOB_NODELIST="gpu[3-5,7]")
    assert qa.stdout.startswith("srun") and f"{tmp_path}/qa_anet/x" in qa.stdout and "dist_url=tcp://gpu3:40000" in qa.stdout


@pytest.mark.parametrize("script, bad", [("pretrain.sh", ["e", "laion", "1", "local"]),
                                         ("train_ret.sh", ["e", "msrvtt", "1", "cluster"]),
                                         ("train_vqa.sh", ["e", "msrvtt", "two", "local"]),
                                         ("eval_ret_mc.sh", ["msrvtt", "/x.pth", "ev", "local", "1"])])
def test_invalid_arguments(tmp_path, script, bad):
    proc = run(script, *bad, exp_dir=tmp_path)
    assert proc.returncode == 1 and proc.stdout.strip()


def test_eval_scripts_mode_before_ngpu(tmp_path):
    ckpt = tmp_path / "run" / "ckpt_best.pth"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"x")
    for script, ds, entry in (("eval_ret.sh", "didemo", "retrieval.py"), ("eval_ret_mc.sh", "msrvtt_mc", "retrieval_mc.py"),
                              ("eval_vqa.sh", "anet", "vqa.py"), ("eval_qa.sh", "vqa", "vqa.py")):
        proc = run(script, ds, str(ckpt), f"ev_{script}", "local", "1", "video_input.num_frames_test=12", exp_dir=tmp_path)
        assert proc.returncode == 0, proc.stdout
        assert entry in proc.stdout and "evaluate=True" in proc.stdout and f"pretrained_path={ckpt}" in proc.stdout
        assert f"output_dir={ckpt.parent}/ev_{script}" in proc.stdout
    missing = run("eval_ret.sh", "msrvtt", str(tmp_path / "nope.pth"), "ev", "local", "1", exp_dir=tmp_path)
    assert missing.returncode == 1 and "does not exist" in missing.stdout
