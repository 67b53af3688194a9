"""Task entry points: pre-training losses, eval-only outputs, VQA metric run, refusals (spec 2.3, 2.6, 10.3)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.errors import InputError
from common.experiment_log import read_metrics

REPO = Path(__file__).resolve().parents[2]


def test_pretrain_mixed_media(syn_dir, tiny_config, tmp_path):
    from singularity.tasks.pretrain import run_pretrain

    out = tmp_path / "pt"
    results = run_pretrain(tiny_config(syn_dir, "pretrain_syn", f"output_dir={out}", "scheduler.epochs=3"))
    assert set(results) == {"syn_test/", "syn_test_emb/"}
    lines = [json.loads(x) for x in (out / "train_stats.jsonl").read_text().splitlines()]
    epochs = [x["epoch_avg"] for x in lines if "epoch_avg" in x]
    for media in ("image", "video"):
        for loss in ("loss_ita", "loss_itm", "loss_mlm"):
            assert all(torch.isfinite(torch.tensor(e[f"{media}-{loss}"])) for e in epochs)
    assert epochs[-1]["video-loss_mlm"] < epochs[0]["video-loss_mlm"]
    assert all(0.001 <= x["temperature"] <= 0.5 for x in lines if "temperature" in x)
    # one checkpoint per epoch, the last three kept (pitfall 9.13 K)
    assert sorted(p.name for p in out.glob("ckpt_*.pth")) == ["ckpt_00.pth", "ckpt_01.pth", "ckpt_02.pth"]
    ckpt = torch.load(out / "ckpt_02.pth", weights_only=True)  # plain-dict config: no pickled OmegaConf (9.21 F)
    assert set(ckpt) >= {"model", "optimizer", "scheduler", "scaler", "config", "epoch", "global_step"}
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 3 * 16
    assert (out / "config.yaml").is_file() and (out / "eval_res_best.json").is_file()
    # the project's common metrics.jsonl: training scalars at log steps, zero-shot results per epoch (issue 16)
    records = read_metrics(out)
    train = [r for r in records if r["split"] == "train"]
    assert {"video-loss_mlm", "image-loss_itm", "lr", "temperature"} <= {r["name"] for r in train}
    val = [r for r in records if r["split"] == "val" and r["name"] == "syn_test/r_mean"]
    assert [r["epoch"] for r in val] == [0, 1, 2] and val[-1]["step"] == 3 * 16
    assert val[-1]["value"] == json.loads((out / "eval_res_best.json").read_text())["syn_test/"]["r_mean"]


def test_zero_shot_eval_of_a_pretrain_checkpoint(syn_dir, tiny_config, tmp_path):
    """eval mode converts text_encoder.bert.* too (pitfall 9.1 F): the text encoder is not left random."""
    from singularity.tasks.pretrain import run_pretrain
    from singularity.tasks.retrieval import run_retrieval

    pt = tmp_path / "pt"
    run_pretrain(tiny_config(syn_dir, "pretrain_syn", f"output_dir={pt}", "scheduler.epochs=1"))
    out = tmp_path / "zs"
    res = run_retrieval(tiny_config(syn_dir, "ret_syn", "evaluate=True", f"pretrained_path={pt / 'ckpt_00.pth'}",
                                    f"output_dir={out}"))
    assert json.loads((out / "eval_res.json").read_text()) == res
    assert "loaded 114/114 keys" in (out / "train.log").read_text()


def test_vqa_metric_run_and_eval_after_training(syn_dir, tiny_config, tmp_path):
    from singularity.tasks.vqa import run_vqa

    out = tmp_path / "vqa"
    res = run_vqa(tiny_config(syn_dir, "vqa_syn", f"output_dir={out}", "scheduler.epochs=1"))
    assert set(res["minival"]) == {"other", "overall"}
    after = out / "eval_after_training"
    for name in ("minival_latest.json", "minival_eval.json", "minival_acc_eval.json", "eval_res_best.json"):
        assert (after / name).is_file(), name
    assert json.loads((after / "eval_res_best.json").read_text()) == res


def test_output_dir_with_results_is_refused(syn_dir, tiny_config, tmp_path):
    from singularity.tasks.retrieval import run_retrieval

    out = tmp_path / "busy"
    out.mkdir()
    (out / "eval_res.json").write_text("{}")
    with pytest.raises(InputError, match="refusing to overwrite"):
        run_retrieval(tiny_config(syn_dir, "ret_syn", f"output_dir={out}"))


def test_cli_entry_points_one_line_errors(tmp_path):
    for args in (["singularity/tasks/retrieval.py"], ["-m", "singularity.tasks.vqa"]):
        proc = subprocess.run([sys.executable, *args, str(tmp_path / "nope.yaml")], cwd=REPO, capture_output=True,
                              text=True)
        assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
        assert "config file not found" in proc.stderr
    proc = subprocess.run([sys.executable, "tasks/pretrain.py", "--help"], cwd=REPO / "singularity",
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "key=value" in proc.stdout and "ret_msrvtt.yaml" in proc.stdout
    assert "scheduler.epochs (int) = 10" in proc.stdout and "skip_unreadable_media (bool)" in proc.stdout  # keys listed
