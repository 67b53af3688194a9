"""Training loop: checkpoint/log layout, resume bit-identical after a kill, max_step, --evaluate, LR flag."""
from __future__ import annotations

import json
import os

import pytest
import torch

from common.distributed import init_distributed
from common.errors import InputError
from set_abstraction import cfg, schedule, train
from set_abstraction.experiment import AbstractionEmbedding

CPU = init_distributed(device="cpu")


@pytest.fixture
def experiment(make_args):
    """Function (metadata_dir, workdir, *flags) -> a CPU training experiment."""
    return lambda syn_dir, work, *extra: AbstractionEmbedding(make_args(syn_dir, work, *extra), CPU, mode="train")


def test_checkpoint_and_log_layout(syn_dir, tmp_path, experiment):
    exp = experiment(syn_dir, tmp_path, "--exp_id", "L", "--lr", "0", "--num_epochs", "5", "--max_step", "1")
    exp.run()
    name = "AbstractionEmbedding_L_moments_resnet3d50_1-1_MSE-CE_Adam-0.0_SAM_1-2-3-4"
    assert exp.name == name
    ckdir = tmp_path / "ckpt" / "AbstractionEmbedding" / "AbstractionEmbeddingModule"
    # lr 0: epoch 1 is the best, later ones tie (not best), so epoch 5 gets an _epoch_5 copy.
    assert sorted(p.name for p in ckdir.glob("*.pth.tar")) == [
        f"{name}_best.pth.tar", f"{name}_checkpoint.pth.tar", f"{name}_epoch_5.pth.tar"]
    ckpt = torch.load(ckdir / f"{name}_checkpoint.pth.tar", weights_only=True)
    assert list(ckpt) == ["epoch", "state_dict", "optimizer", "best_acc1"] and ckpt["epoch"] == 5
    assert all(k.startswith("module.") for k in ckpt["state_dict"]) and len(ckpt["state_dict"]) == 22
    assert torch.load(ckdir / f"{name}_best.pth.tar", weights_only=True)["epoch"] == 1
    umask = os.umask(0)
    os.umask(umask)
    for path in [*ckdir.glob("*.pth.tar"), *ckdir.rglob("step_*"), *ckdir.rglob("training_state.pt")]:
        mode = 0o777 if path.is_dir() else 0o666
        assert path.stat().st_mode & 0o777 == mode & ~umask, path  # issue 11: the user's umask, not 0600
    # Spec 9.14 (F): _epoch_N holds the state after epoch N, not the start of it.
    assert torch.load(ckdir / f"{name}_epoch_5.pth.tar", weights_only=True)["epoch"] == 5
    logdir = tmp_path / "logs" / "AbstractionEmbedding" / "AbstractionEmbeddingModule"
    main_log = (logdir / f"{name}.txt").read_text()
    assert main_log.startswith("Epoch: [0][0/1]\tTime ")  # max_step caps the batches (spec 9.7)
    assert "Max steps reached!" in main_log and "Testing Results: Loss: Epoch: [4][0/2]" in main_log
    assert (logdir / f"{name}_val.txt").read_text().count("Best top1@abstr: ") == 5
    records = [json.loads(line) for line in (logdir / f"{name}_metrics.jsonl").read_text().splitlines()]
    assert {r["mode"] for r in records} == {"train", "train_epoch", "val"}
    # Spec 9.12: nothing is silently overwritten.
    with pytest.raises(InputError, match="a run of this name exists"):
        experiment(syn_dir, tmp_path, "--exp_id", "L", "--lr", "0")


def test_max_step_stops_after_n_batches(syn_dir, tmp_path, experiment):
    exp = experiment(syn_dir, tmp_path, "--num_epochs", "1", "--max_step", "3")
    exp.run()
    assert exp.global_step == 3  # the original stopped after batch 0


def _final_weights(work):
    path = next((work / "ckpt").rglob("*_checkpoint.pth.tar"))
    return torch.load(path, weights_only=True)


def test_kill_and_resume_is_bit_identical(syn_dir, tmp_path, experiment, monkeypatch):
    flags = ("--exp_id", "R", "--num_epochs", "3", "--checkpoint_freq", "5", "--lr_schedule", "legacy")
    straight = tmp_path / "straight"
    experiment(syn_dir, straight, *flags).run()

    killed = tmp_path / "killed"
    real_save = AbstractionEmbedding.save_state
    calls = {"n": 0}

    def save_then_die(self, *args, **kwargs):
        real_save(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 6:  # epoch 1, after batch 10 of 16
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(AbstractionEmbedding, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        experiment(syn_dir, killed, *flags).run()
    monkeypatch.setattr(AbstractionEmbedding, "save_state", real_save)
    rolling = next((killed / "ckpt").rglob("*_checkpoint.pth.tar"))
    resumed = experiment(syn_dir, killed, *flags, "--resume", str(rolling))
    assert (resumed.start_epoch, resumed.skip_batches) == (1, 10)
    resumed.run()
    a, b = _final_weights(straight), _final_weights(killed)
    assert a["epoch"] == b["epoch"] == 3 and a["best_acc1"] == b["best_acc1"]
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key


def test_resume_from_original_checkpoint_and_evaluate_flag(syn_dir, tmp_path, experiment, train_argv, capsys):
    exp = experiment(syn_dir, tmp_path, "--exp_id", "E", "--num_epochs", "1", "--max_step", "2")
    exp.run()
    best = next((tmp_path / "ckpt").rglob("*_best.pth.tar"))
    # Spec 9.8 (F): train.py --evaluate runs the test.py evaluation instead of crashing.
    assert train.main(train_argv(syn_dir, tmp_path, "--evaluate", "--resume", str(best))) == 0
    out = capsys.readouterr().out
    assert "-----Evaluation is finished------" in out and "N = 4 Acc@1 (" in out
    name = "AbstractionEmbedding_E_moments_resnet3d50_1-1_MSE-CE_Adam-0.003_SAM_1-2-3-4"
    results = json.loads((tmp_path / "out" / "AbstractionEmbedding" / "AbstractionEmbeddingModule" /
                          f"{name}_results.json").read_text())
    assert set(results) >= {"abstraction", "set_completion", "odd_one_out"}
    from PIL import Image

    with Image.open(tmp_path / "out" / "AbstractionEmbedding" / "AbstractionEmbeddingModule" / f"{name}_example.png") as im:
        assert im.format == "PNG" and im.size[0] > 800


def test_legacy_schedule_is_the_default_and_reproduces_val_loss_quirk(syn_dir, tmp_path, experiment):
    exp = experiment(syn_dir, tmp_path, "--num_epochs", "3", "--max_step", "1")
    history = exp.run()
    expected = schedule.legacy_lr(3e-3, history["val"][-1]["full"], 3)
    assert exp.optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    cosine = experiment(syn_dir, tmp_path / "d", "--num_epochs", "3", "--max_step", "1", "--lr_schedule", "cosine")
    cosine.run()
    assert cosine.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine reached T_max


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")
def test_legacy_lr_after_one_epoch_of_the_released_recipe():
    """Issue 12: the released recipe (Adam, lr 1e-4), T_max = num_epochs = 2, first validation loss 1.49426.

    By hand: cos(pi * 1.49426 / 2) = cos(2.34721) = -0.70070, so lr = 1e-4 * (1 - 0.70070) / 2 = 1.4965e-5,
    where the per-epoch cosine gives 1e-4 * (1 + cos(pi / 2)) / 2 = 5e-5.
    """
    args = cfg.parse_args(["--num_epochs", "2"])  # the default schedule and lr
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=args.lr, weight_decay=5e-4)
    default = schedule.build_schedule(args.lr_schedule, opt, args.num_epochs)
    default.step_epoch()
    assert opt.param_groups[0]["lr"] == 1e-4  # nothing moves before the validation
    default.step_validation(1.49426)
    assert opt.param_groups[0]["lr"] == pytest.approx(1.4965e-5, rel=1e-4)
    opt2 = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    cosine = schedule.build_schedule("cosine", opt2, 2)
    cosine.step_epoch()
    assert opt2.param_groups[0]["lr"] == pytest.approx(5e-5, rel=1e-9)


def _original_checkpoint(path, exp, epoch, lr=None):
    """An original-layout .pth.tar of ``exp``'s model at ``epoch``; the optimizer's lr set to ``lr`` if given."""
    from set_abstraction.convert import to_original_state_dict

    state = {"epoch": epoch, "state_dict": to_original_state_dict(exp.model.state_dict()), "best_acc1": 12.5}
    if lr is not None:
        optimizer = exp.optimizer.state_dict()
        optimizer["param_groups"][0]["lr"] = lr
        state["optimizer"] = optimizer
    torch.save(state, path)
    return path


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")
def test_resume_from_original_checkpoint_aligns_both_schedules(syn_dir, tmp_path, experiment):
    """Issue 12: resuming an original checkpoint at epoch 2 of 4 continues each schedule where it was."""
    base = experiment(syn_dir, tmp_path / "a", "--num_epochs", "4")
    ckpt = _original_checkpoint(tmp_path / "AbstractionEmbedding_x_best.pth.tar", base, epoch=2, lr=2.1e-3)
    cosine = experiment(syn_dir, tmp_path / "c", "--num_epochs", "4", "--lr_schedule", "cosine", "--resume", str(ckpt))
    assert cosine.start_epoch == 2
    assert cosine.optimizer.param_groups[0]["lr"] == pytest.approx(schedule.cosine_lr(3e-3, 2, 4))  # 1.5e-3
    cosine.schedule.step_epoch()
    assert cosine.optimizer.param_groups[0]["lr"] == pytest.approx(schedule.cosine_lr(3e-3, 3, 4))
    cosine.schedule.step_epoch()
    assert cosine.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    # The original kept the restored optimizer's lr (set by its last validation) and its base lr from --lr.
    legacy = experiment(syn_dir, tmp_path / "l", "--num_epochs", "4", "--resume", str(ckpt))
    assert legacy.optimizer.param_groups[0]["lr"] == pytest.approx(2.1e-3)
    legacy.schedule.step_validation(1.0)
    assert legacy.optimizer.param_groups[0]["lr"] == pytest.approx(schedule.legacy_lr(3e-3, 1.0, 4))
    no_optimizer = _original_checkpoint(tmp_path / "AbstractionEmbedding_y_best.pth.tar", base, epoch=2)
    fresh = experiment(syn_dir, tmp_path / "n", "--num_epochs", "4", "--resume", str(no_optimizer))
    assert fresh.optimizer.param_groups[0]["lr"] == pytest.approx(3e-3)
    started = experiment(syn_dir, tmp_path / "s", "--num_epochs", "4", "--lr_schedule", "cosine", "--start_epoch", "2")
    assert started.optimizer.param_groups[0]["lr"] == pytest.approx(schedule.cosine_lr(3e-3, 2, 4))


def test_full_state_of_the_other_schedule_or_truncated_is_refused_in_one_line(syn_dir, tmp_path, train_argv, capsys):
    from common.errors import run_cli

    flags = ("--exp_id", "S", "--num_epochs", "2", "--max_step", "1")
    assert train.main(train_argv(syn_dir, tmp_path, *flags, "--num_epochs", "1", "--lr_schedule", "cosine")) == 0
    rolling = next((tmp_path / "ckpt").rglob("*_checkpoint.pth.tar"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train.main, train_argv(syn_dir, tmp_path, *flags, "--resume", str(rolling)))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "field 'scheduler': saved with --lr_schedule cosine, this run uses legacy" in err.strip().splitlines()[-1]
    state = next((tmp_path / "ckpt").rglob("training_state.pt"))
    state.write_bytes(state.read_bytes()[:300])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train.main, train_argv(syn_dir, tmp_path, *flags, "--lr_schedule", "cosine", "--resume", str(rolling)))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"error: {state}: truncated or corrupt torch zip archive (File is not a zip file)")


def test_non_default_scales_train(syn_dir, tmp_path, experiment):
    exp = experiment(syn_dir, tmp_path, "--num_epochs", "1", "--max_step", "1", "-s", "2", "3", "4")
    history = exp.run()
    assert "top1@abstr_1" not in history["val"][0] and "top1@abstr_2" in history["val"][0]
    exp4 = experiment(syn_dir, tmp_path / "s4", "--num_epochs", "1", "--max_step", "1", "-s", "4",
                      "--return_metric", "top1@abstr_4")
    assert exp4.model.output_subsets(4) == [(0, 1, 2, 3)]  # label offset 14, not the original's 15
    val = exp4.run()["val"][0]
    assert sorted(k for k in val if k.startswith("top")) == ["top1@abstr", "top1@abstr_4", "top5@abstr",
                                                             "top5@abstr_4"]
    assert val["top1@abstr"] == val["top1@abstr_4"]


def test_val_freq_validates_every_n_epochs_and_the_last(syn_dir, tmp_path, experiment):
    history = experiment(syn_dir, tmp_path, "--num_epochs", "3", "--val_freq", "2", "--max_step", "1").run()
    assert [h["epoch"] for h in history["val"]] == [1, 2] and len(history["train"]) == 3


def test_kinetics_layout_trains_and_evaluates(syn_dir, tmp_path, experiment):
    exp = experiment(syn_dir, tmp_path, "--dataset", "kinetics", "--num_epochs", "1", "--max_step", "2")
    assert [h["epoch"] for h in exp.run()["val"]] == [0]
    results = exp.evaluate(visualize=False)
    assert set(results["odd_one_out"]) == {"3", "4", "5"} and results["set_completion"]["counts"] == {
        "2": 20, "3": 20, "4": 20}
