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
                                                    "--lang_metrics", "CIDEr", "--val_images_use", "8",
                                                    "--losses_log_every", "1"])
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
    scalars = read_tensorboard_scalars(ck)  # spec 2.7: TensorBoard scalars in --checkpoint_path
    # the original tags "validation loss"; tensorboardX stores it as "validation_loss" (there and here)
    assert {"validation_loss", "CIDEr"} <= set(scalars) and scalars["CIDEr"][0][0] == 3
    assert [step for step, _ in scalars["train_loss"]] == [1, 2, 3]
    assert {"learning_rate", "scheduled_sampling_prob"} <= set(scalars)
    assert scalars["CIDEr"][0][1] == pytest.approx(hist["val_result_history"][3]["lang_stats"]["CIDEr"], rel=1e-6)

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

    # create_report.py (spec 2.8b) on the report pickle eval.py wrote, as two runs -> HTML with paired t-tests
    pkl = res / "t_test_report_data.pkl"
    report = tmp_path / "report"
    out = subprocess.run([sys.executable, "create_report.py", "--pickles", str(pkl), str(pkl), "--run_names", "a", "b",
                          "--out_dir", str(report)], cwd=SC_DIR, env=ENV, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    index = (report / "index.html").read_text()
    assert "a vs b (paired t-test)" in index and f"{result['overall']['CIDEr']:.4f}" in index
    assert (report / "a" / "plots" / "CIDEr.jpg").stat().st_size > 0 and (report / "b" / "Bleu_4.html").is_file()
    assert len(list((report / "image_reports").glob("*.html"))) == 10 and len(list((report / "images").iterdir())) == 10
    again = subprocess.run([sys.executable, "create_report.py", "--pickles", str(pkl), "--run_names", "a",
                            "--out_dir", str(report)], cwd=SC_DIR, env=ENV, capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr and (report / "index.html").read_text() == index

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


def read_tensorboard_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Tag -> [(step, value)] from the tfevents files (TFRecord framing around Event protos)."""
    import struct

    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_create_report_reads_an_ort_report_pickle(tmp_path):
    """ORT pickles `misc.report.ReportData(coco_eval, ...)`; the report reads it without ORT's code, SPICE included."""
    import types

    from spatial_captioning.report import load_report_pickle, paired_tests, write_report

    misc, report_mod = types.ModuleType("misc"), types.ModuleType("misc.report")
    coco_mod = types.ModuleType("pycocoevalcap.eval")

    class ReportData:
        def __init__(self, coco_eval, predictions, image_root, model_id, split):
            self.coco_eval, self.predictions, self.image_root = coco_eval, predictions, image_root
            self.model_id, self.split = model_id, split

    class COCOEvalCap:
        pass

    ReportData.__module__, COCOEvalCap.__module__ = "misc.report", "pycocoevalcap.eval"
    ReportData.__qualname__, COCOEvalCap.__qualname__ = "ReportData", "COCOEvalCap"
    report_mod.ReportData, coco_mod.COCOEvalCap = ReportData, COCOEvalCap
    saved = {k: sys.modules.get(k) for k in ("misc", "misc.report", "pycocoevalcap.eval")}
    sys.modules.update({"misc": misc, "misc.report": report_mod, "pycocoevalcap.eval": coco_mod})
    try:
        ev = COCOEvalCap()
        ev.eval = {"CIDEr": 1.2, "Bleu_4": 0.3, "SPICE": 0.2}
        spice = {"All": {"f": 0.25, "pr": 0.3, "re": 0.2}, "Object": {"f": 0.5, "pr": 0.5, "re": 0.5}}
        ev.imgToEval = {7: {"image_id": 7, "CIDEr": 1.0, "Bleu_4": 0.2, "SPICE": spice, "caption": "a cat"},
                        9: {"image_id": 9, "CIDEr": 1.4, "Bleu_4": 0.4, "SPICE": spice, "caption": "a dog"}}
        blob = pickle.dumps(ReportData(ev, [{"image_id": 7, "caption": "a cat", "file_path": "x/7.jpg"}], "", "m", "test"))
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    (tmp_path / "ort.pkl").write_bytes(blob)
    run = load_report_pickle(tmp_path / "ort.pkl", "ort")
    assert run.overall["CIDEr"] == 1.2 and run.per_image[9]["SPICE.All.f"] == 0.25
    assert run.per_image[7]["SPICE.Object.re"] == 0.5 and run.captions == {7: "a cat", 9: "a dog"}
    other = load_report_pickle(tmp_path / "ort.pkl", "other")
    other.per_image = {i: {k: v + 0.1 * i for k, v in s.items()} for i, s in other.per_image.items()}
    t, p, n = paired_tests(run, other, ["CIDEr"])["CIDEr"]
    assert n == 2 and t < 0
    index = write_report([run, other], tmp_path / "r").read_text()
    assert "SPICE.All.f" in index and "ort vs other" in index

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(InputError, match="wants to call os.system"):
        load_report_pickle(tmp_path / "evil.pkl", "x")


def test_eval_refuses_the_unpublished_raw_image_options():
    """--coco_json/--cnn_weight_dir needed the never-published DataLoaderRaw; --image_folder has its own path."""
    out = subprocess.run([sys.executable, "-m", "spatial_captioning.eval", "--coco_json", "x"], env=ENV,
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
