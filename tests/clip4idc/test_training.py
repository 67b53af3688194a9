"""Training runs: kill-and-resume ends bit-identical to an uninterrupted run (optimizer state and RNG
restored, spec 9.12 fix), torchrun with 2 CPU processes (gloo, all-gathered InfoNCE, spec 9.6/9.8),
the original's per-epoch files and log lines."""
import json
import os
import subprocess
import sys

import pytest
import torch

from common.experiment_log import read_metrics
from clip4idc.convert import read_state_dict
from clip4idc.params import build_parser, check_args
from clip4idc.train import run


def _args(task, syn_root, out, tiny_flags, *extra):
    argv = ["--do_train", "--data_path", str(syn_root / "clevr"), "--output_dir", str(out), "--batch_size", "16",
            "--epochs", "2", "--seed", "7"] + tiny_flags + list(extra)
    if task == "caption":
        argv += ["--gt_dir", str(syn_root / "gt"), "--caption_metrics", "Bleu", "--n_visualize", "0"]
    return check_args(build_parser(task).parse_args(argv), task)


def test_kill_and_resume_is_bit_identical(tmp_path, syn_root, tiny_flags):
    run(_args("caption", syn_root, tmp_path / "full", tiny_flags), "caption")
    run(_args("caption", syn_root, tmp_path / "killed", tiny_flags), "caption", stop_after_epoch=0)
    assert not (tmp_path / "killed" / "pytorch_model.bin.1").exists()
    with pytest.raises(Exception, match="already holds a training run"):
        run(_args("caption", syn_root, tmp_path / "killed", tiny_flags), "caption")
    run(_args("caption", syn_root, tmp_path / "killed", tiny_flags, "--resume_model",
              str(tmp_path / "killed" / "resume")), "caption")
    full = read_state_dict(tmp_path / "full" / "pytorch_model.bin.1")
    resumed = read_state_dict(tmp_path / "killed" / "pytorch_model.bin.1")
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
    assert (tmp_path / "full" / "hyp_ep_1.json").read_text() == (tmp_path / "killed" / "hyp_ep_1.json").read_text()
    state = torch.load(next((tmp_path / "killed" / "resume").glob("step_*/*.pt")), weights_only=False) \
        if list((tmp_path / "killed" / "resume").glob("step_*/*.pt")) else None
    if state is not None:
        assert state["optimizer"]["state"]  # the optimizer moments are saved (the original never saved them)
    log = (tmp_path / "full" / "log.txt").read_text()
    for line in ("Effective parameters:", "***** Running training *****", "Epoch 2/2 Finished, Train Loss:",
                 "Model saved to", ">>>  BLEU_1:", "The best model is:"):
        assert line in log
    assert "Lr: -" not in log and "Lr: ," not in log  # scheduled LRs are logged (spec 9.9 fix)
    rows = read_metrics(tmp_path / "full")  # the common metrics.jsonl schema (issue 16)
    assert {"loss", "lr", "epoch_loss"} <= {r["name"] for r in rows if r["split"] == "train"}
    assert "Bleu_4" in {r["name"] for r in rows if r["split"] == "test"}
    assert [r["epoch"] for r in rows if r["name"] == "epoch_loss"] == [0, 1]


def test_torchrun_two_cpu_processes(tmp_path, syn_root, tiny_flags, repo_root):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "clip4idc.main_task_retrieval", "--do_train", "--data_path", str(syn_root / "clevr"),
           "--output_dir", str(out), "--batch_size", "16", "--epochs", "1", "--device", "cpu"] + tiny_flags
    proc = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "device: cpu n_gpu: 2" in log and "Epoch 1/1 Finished" in log
    assert "R@1:" in log and (out / "pytorch_model.bin.0").is_file()
    # 48 training captions, global batch 16 -> 8 per process -> 3 steps per epoch on each rank (spec 9.6 fix)
    assert "Step: 3/3" in log


@pytest.mark.parametrize("datatype", ["spot", "ier"])
def test_caption_training_on_spot_and_ier(tmp_path, syn_root, tiny_flags, datatype):
    flags = [f for f in tiny_flags]
    flags[flags.index("--datatype") + 1] = datatype
    root = syn_root / datatype
    argv = ["--do_train", "--data_path", str(root), "--features_path", str(root / "images"), "--output_dir",
            str(tmp_path / "o"), "--batch_size", "4", "--epochs", "1", "--gt_dir", str(syn_root / "gt"),
            "--caption_metrics", "Bleu", "--n_visualize", "1"] + flags
    run(check_args(build_parser("caption").parse_args(argv), "caption"), "caption")
    hyps = json.loads((tmp_path / "o" / "hyp_ep_0.json").read_text())
    gt = json.loads((syn_root / "gt" / f"{datatype}_total_change_captions_reformat.json").read_text())
    assert {h["image_id"] for h in hyps} <= {i["id"] for i in gt["images"]}
    assert not any(h["image_id"].endswith("_n") for h in hyps)
    assert list((tmp_path / "o" / "vis_ep_0").glob("*.png"))


def test_visualize_cli(tmp_path, syn_root, tiny_caption_model):
    from clip4idc.convert import new_to_original
    from clip4idc.factory import save_config_sidecar
    from clip4idc.visualize import main as visualize_main

    torch.save(new_to_original(tiny_caption_model.state_dict()), tmp_path / "m.bin")
    save_config_sidecar(tmp_path, tiny_caption_model.clip.cfg, tiny_caption_model.decoder.cfg, 10)
    assert visualize_main(["--init_model", str(tmp_path / "m.bin"), "--data_path", str(syn_root / "clevr"),
                           "--index", "0", "1", "--output_dir", str(tmp_path / "vis")]) == 0
    assert len(list((tmp_path / "vis").glob("*.png"))) == 2
