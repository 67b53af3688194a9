"""Losses, schedules, rewards, checkpoints, resume, eval.py and torchrun (spec 4.6-4.7, 5, 6, 9, 10.3)."""
from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import InputError
from common.metrics import CiderD
from sc_helpers import train_argv
from spatial_captioning.captions import document_frequency
from spatial_captioning.checkpoints import load_infos
from spatial_captioning.losses import LabelSmoothing, LanguageModelCriterion, RewardCriterion
from spatial_captioning.opts import parse_train_opt
from spatial_captioning.optim import NoamOpt, clip_gradient, noam_rate
from spatial_captioning.rewards import resolve_cached_tokens, self_critical_reward
from spatial_captioning.training import Trainer

SC_DIR = Path(__file__).resolve().parents[2] / "spatial_captioning"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def test_cider_d_golden_matches_ruotianluo():
    refs = [["1 2 3 0", "1 2 4 0"], ["5 6 0", "5 7 6 0"]]
    df = document_frequency([[r.split() for r in image] for image in refs])
    scorer = CiderD(df=df, ref_len=math.log(2))
    mean, per = scorer.compute_score(["1 2 3 0", "5 6 0", "5 6 0"], [refs[0], refs[1], refs[0]])
    assert np.allclose(per, [6.25, 5.25981514, 0.0])
    assert mean == pytest.approx(3.836605045150833)


def test_self_critical_reward_and_reward_criterion():
    class Stub:
        def compute_score(self, cands, refs):
            scores = np.array([float(len(c.split())) for c in cands])
            return scores.mean(), scores

    gen = np.array([[3, 4, 0, 0], [3, 0, 0, 0]])
    greedy = np.array([[3, 0, 0, 0], [3, 0, 0, 0]])
    reward, stats = self_critical_reward(gen, greedy, [np.array([[3, 0, 0, 0]], dtype=np.uint32)], 2, Stub())
    assert reward.shape == (2, 4)
    assert np.allclose(reward, [[1, 1, 1, 1], [0, 0, 0, 0]])  # "3 4 0" (3 tokens) - "3 0" (2)
    loss = RewardCriterion()(torch.tensor([[-1.0, -2.0, -3.0]]), torch.tensor([[3, 0, 0]]), torch.ones(1, 3))
    assert float(loss) == pytest.approx(1.5)


def test_language_model_criterion_and_label_smoothing():
    V = 9
    logp = torch.full((2, 3, V + 1), -math.log(V + 1))
    target = torch.randint(1, V + 1, (2, 3))
    mask = torch.ones(2, 3)
    assert float(LanguageModelCriterion()(logp, target, mask)) == pytest.approx(math.log(V + 1), rel=1e-6)
    s = 0.2
    true = torch.full((V + 1,), s / (V - 1))  # spec 9.20: V, not V+1, in the denominator (kept)
    true[target[0, 0]] = 1 - s
    kl = float((true * (true.log() - logp[0, 0])).sum())
    one = LabelSmoothing(V, s)(logp[:1, :1], target[:1, :1], mask[:1, :1])
    assert float(one) == pytest.approx(kl, rel=1e-5)


def test_noam_schedule_values_and_step_from_iteration():
    for step, lr in ((1, 4.4194e-08), (5000, 2.2097e-04), (10000, 4.4194e-04), (40000, 2.2097e-04)):
        assert noam_rate(step, 512, 1.0, 10000) == pytest.approx(lr, rel=1e-4)
    w = torch.nn.Parameter(torch.zeros(2))
    noam = NoamOpt(512, 1, 10000, torch.optim.Adam([w], lr=0, betas=(0.9, 0.98), eps=1e-9))
    noam._step = 4999
    w.grad = torch.ones(2)
    noam.step()
    assert noam.param_groups[0]["lr"] == pytest.approx(2.2097e-04, rel=1e-4)


def test_gradient_clipping_is_by_value_and_skips_params_without_grad():
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([a, b], lr=1)
    a.grad = torch.tensor([0.5, -0.05, -2.0])
    clip_gradient(opt, 0.1)  # b.grad is None: the original crashed here (spec 9.6)
    assert torch.equal(a.grad, torch.tensor([0.1, -0.05, -0.1]))


def test_missing_cider_df_is_reported_when_training_starts(syn, tmp_path):
    with pytest.raises(InputError, match="prepro_ngrams"):
        resolve_cached_tokens("coco-train-idxs", str(tmp_path))
    assert resolve_cached_tokens(str(syn["cached_tokens"])) == Path(syn["cached_tokens"])
    argv = train_argv(syn, tmp_path / "ck", max_iters=1, extra=["--self_critical_after", "5", "--cached_tokens",
                                                                 str(tmp_path / "nope")])
    with pytest.raises(InputError, match="prepro_ngrams"):
        Trainer(parse_train_opt(argv))


def test_resume_is_bit_identical_to_an_uninterrupted_run(syn, tmp_path):
    full = Trainer(parse_train_opt(train_argv(syn, tmp_path / "a", max_iters=6, extra=["--save_checkpoint_every", "3",
                                                                                      "--dropout", "0.3"])))
    full.run()
    first = Trainer(parse_train_opt(train_argv(syn, tmp_path / "b", max_iters=3, extra=["--save_checkpoint_every", "3",
                                                                                       "--dropout", "0.3"])))
    first.run()
    resumed = Trainer(parse_train_opt(train_argv(syn, tmp_path / "b", max_iters=6, extra=[
        "--save_checkpoint_every", "3", "--dropout", "0.3", "--start_from", str(tmp_path / "b"), "--seed", "99"])))
    assert resumed.iteration == 3
    resumed.run()
    a = torch.load(tmp_path / "a" / "model.pth", weights_only=True)
    b = torch.load(tmp_path / "b" / "model.pth", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ia, ib = load_infos(tmp_path / "a" / "infos_t.pkl"), load_infos(tmp_path / "b" / "infos_t.pkl")
    assert ia["iter"] == ib["iter"] == 6 and ia["loader_state"]["position"] == ib["loader_state"]["position"]


def test_readme_style_cli_train_resume_and_eval(syn, tmp_path):
    ck = tmp_path / "checkpoints" / "run"
    args = train_argv(syn, ck, max_iters=3, extra=["--perform_validation_every", "3", "--language_eval", "1",
                                                    "--lang_metrics", "CIDEr", "--val_images_use", "8"])
    out = subprocess.run([sys.executable, "train.py", *args], cwd=SC_DIR, env=ENV, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Iter 3 (epoch 0), loss = " in out.stdout and "Best model saved to" in out.stdout
    names = {p.name for p in ck.iterdir()}
    assert {"model.pth", "optimizer.pth", "infos_t.pkl", "histories_t.pkl", "model-best.pth",
            "infos_t-best.pkl"} <= names
    infos = load_infos(ck / "infos_t.pkl")
    assert infos["iter"] == 3 and set(infos) >= {"iter", "epoch", "best_val_score", "opt", "vocab", "loader_state"}
    assert isinstance(infos["opt"], dict) and infos["opt"]["use_grid"] is True
    best = load_infos(ck / "infos_t-best.pkl")
    assert best["iter"] == 3  # fresh best infos, not a stale copy (spec 9.6)
    hist = load_infos(ck / "histories_t.pkl")
    assert 3 in hist["val_result_history"] and "CIDEr" in hist["val_result_history"][3]["lang_stats"]

    args2 = train_argv(syn, ck, max_iters=5, extra=["--start_from", str(ck)])
    out = subprocess.run([sys.executable, "-m", "spatial_captioning.train", *args2], env=ENV, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Iter 4 (epoch 0)" in out.stdout and "Iter 1 " not in out.stdout
    assert load_infos(ck / "infos_t.pkl")["loader_state"]["position"] == 5 * 8

    vis, res = tmp_path / "vis", tmp_path / "eval_results"
    out = subprocess.run([sys.executable, "eval.py", "--dump_images", "0", "--num_images", "10", "--model",
                          str(ck / "model.pth"), "--infos_path", str(ck / "infos_t.pkl"), "--language_eval", "1",
                          "--lang_metrics", "Bleu", "CIDEr", "--device", "cpu", "--ann_file", str(syn["ann_file"]),
                          "--vis_dir", str(vis), "--eval_results_dir", str(res), "--dump_png", "2",
                          "--image_root", str(syn["image_root"]), "--input_box_dir", str(syn["input_box_dir"])],
                         cwd=SC_DIR, env=ENV, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "beam_size 2" in out.stdout and "--------------------" in out.stdout  # eval default beam 2 (spec 9.11)
    preds = json.loads((vis / "vis.json").read_text())
    assert len(preds) == 10 and set(preds[0]) >= {"image_id", "caption", "file_path"}
    result = json.loads((res / "t_test.json").read_text())
    assert {"Bleu_4", "CIDEr"} <= set(result["overall"]) and len(result["imgToEval"]) == 10
    assert result["beam_size"] == 2 and result["split"] == "test"
    assert len(list((vis / "png").glob("*.png"))) == 2

    # spec 9.16 (K): the checkpoint's infos['vocab'] is authoritative at eval time, not the input json's.
    infos = load_infos(ck / "infos_t.pkl")
    infos["vocab"] = {k: v.upper() for k, v in infos["vocab"].items()}
    with open(tmp_path / "infos_upper.pkl", "wb") as handle:
        pickle.dump(infos, handle)
    vis2 = tmp_path / "vis_upper"
    out = subprocess.run([sys.executable, "eval.py", "--dump_images", "0", "--num_images", "4", "--model",
                          str(ck / "model.pth"), "--infos_path", str(tmp_path / "infos_upper.pkl"),
                          "--language_eval", "0", "--device", "cpu", "--vis_dir", str(vis2),
                          "--eval_results_dir", str(tmp_path / "eval_upper"), "--dump_png", "0",
                          "--input_box_dir", str(syn["input_box_dir"])],
                         cwd=SC_DIR, env=ENV, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-2000:]
    upper = json.loads((vis2 / "vis.json").read_text())
    words = " ".join(p["caption"] for p in upper).split()
    assert words and all(w == w.upper() for w in words)
    assert [p["caption"].lower() for p in upper] == [p["caption"].lower() for p in preds[:4]]


def test_eval_refuses_raw_image_mode():
    out = subprocess.run([sys.executable, "-m", "spatial_captioning.eval", "--image_folder", "x"], env=ENV,
                         capture_output=True, text=True)
    assert out.returncode != 0 and "DataLoaderRaw" in out.stderr


def test_unpublished_options_are_refused():
    with pytest.raises(SystemExit, match="never published"):
        parse_train_opt(["--use_local_attn", "1"])
    with pytest.raises(SystemExit, match="never published|not available"):
        parse_train_opt(["--caption_model", "new_local"])
    with pytest.raises(SystemExit, match="mutually exclusive"):
        parse_train_opt(["--use_grid", "1", "--use_box", "1"])


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_cpu_processes(syn, tmp_path):
    args = train_argv(syn, tmp_path / "ddp", max_iters=3)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={free_port()}",
                          "--module", "spatial_captioning.train", *args], env=ENV, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("Iter 3 (epoch 0)") == 1  # rank 0 prints
    infos = load_infos(tmp_path / "ddp" / "infos_t.pkl")
    assert infos["iter"] == 3
