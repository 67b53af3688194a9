"""Flags of spec 2.2, run names of spec 2.4, metadata paths under --metadata_dir."""
from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import InputError
from set_abstraction import cfg


def test_defaults_and_both_model_spellings():
    args = cfg.parse_args([])
    assert (args.experiment, args.dataset, args.batch_size, args.lr, args.num_epochs, args.clip_gradient) == (
        "AbstractionEmbedding", "moments", 256, 1e-4, 60, 20)
    assert args.criterion == ["MSE", "CE"] and args.loss_weights == [1, 1] and args.scales == [1, 2, 3, 4]
    assert args.lr_schedule == "legacy"  # the original's schedule is the default (spec 9.1 K, issue 12)
    assert cfg.parse_args(["--model", "AbstractionEmbeddingModule"]).model_name == "AbstractionEmbeddingModule"
    assert cfg.parse_args(["-m", "AbstractionEmbeddingModule"]).model_name == "AbstractionEmbeddingModule"
    with pytest.raises(SystemExit):
        cfg.parse_args(["--model_name", "Nope"])
    with pytest.raises(SystemExit):
        cfg.parse_args(["--dataset", "multimoments"])
    assert cfg.parse_args(["--cudnn_benchmark", "no"]).cudnn_benchmark is False


def test_run_name_default_and_float_weights():
    args = cfg.parse_args(["--exp_id", "RUN1", "--dataset", "kinetics"])
    assert cfg.run_name(args) == "AbstractionEmbedding_RUN1_kinetics_resnet3d50_1-1_MSE-CE_Adam-0.0001_SAM_1-2-3-4"
    args = cfg.parse_args(["-l", "1", "1"])
    assert cfg.run_name(args) == "AbstractionEmbedding_None_moments_resnet3d50_1.0-1.0_MSE-CE_Adam-0.0001_SAM_1-2-3-4"
    assert cfg.run_name(cfg.parse_args(["--prefix", "x"])).startswith("xAbstractionEmbedding_None")


@pytest.mark.parametrize("resume,prefix,name", [
    ("metadata/AbstractionEmbedding_moments_SAM_1-2-3-4_best.pth.tar", "", "AbstractionEmbedding_moments_SAM_1-2-3-4"),
    ("c/AbstractionEmbedding_R_kinetics_x_checkpoint.pth.tar", "", "AbstractionEmbedding_R_kinetics_x"),
    ("c/Other_R_moments_epoch_5.pth.tar", "", "AbstractionEmbedding_R_moments_epoch_5.pth.tar"),
    ("c/AbstractionEmbedding_moments_best.pth.tar", "pre", "AbstractionEmbedding_moments"),
])
def test_run_name_from_resume_path(resume, prefix, name):
    args = cfg.parse_args(["--resume", resume, "--prefix", prefix])
    assert cfg.run_name(args) == name


@pytest.mark.parametrize("argv,flag", [
    (["--criterion", "MSE"], "--criterion"), (["--criterion", "MSE", "CE", "BCE"], "--criterion"),
    (["-l", "1"], "--loss_weights"), (["-bm", "i3d"], "--basemodel_name"), (["-s", "3", "2"], "--scales"),
    (["--max_step", "0"], "--max_step"), (["--return_metric", "top1@abstr_1", "-s", "2", "3"], "--return_metric"),
    (["--val_freq", "0"], "--val_freq"),
])
def test_refused_flags(argv, flag):
    with pytest.raises(InputError, match=flag):
        cfg.parse_args(argv)


def test_metadata_dir_is_honoured():
    paths = cfg.metadata_paths(cfg.parse_args(["--metadata_dir", "/data/meta", "--dataset", "kinetics"]))
    assert paths.graph() == Path("/data/meta/kinetics_graph.json")
    assert paths.sets("test") == Path("/data/meta/kinetics_human_abstraction_sets.json")
    assert paths.features("val") == Path("/data/meta/resnet3d50_kinetics_val_features.pth")
    assert paths.embeddings("test") is None
    assert paths.listfile("train") == Path("/data/meta/kinetics_train_listfile.txt")
    assert paths.pretrained() == Path("/data/meta/AbstractionEmbedding_kinetics_SAM_1-2-3-4_best.pth.tar")


def test_optimizer_builder_does_not_mutate_state():
    """Spec 9.10 (F): a second SGD build is still SGD with momentum (the original popped a global)."""
    import torch

    from set_abstraction.experiment import build_optimizer

    args = cfg.parse_args(["--optimizer", "SGD", "--lr", "0.5"])
    for _ in range(2):
        opt = build_optimizer(args, [torch.nn.Parameter(torch.zeros(1))])
        assert isinstance(opt, torch.optim.SGD)
        assert opt.defaults["momentum"] == 0.9 and opt.defaults["weight_decay"] == 5e-4 and opt.defaults["lr"] == 0.5
    adam = build_optimizer(cfg.parse_args([]), [torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["weight_decay"] == 5e-4


def test_training_only_flags_are_reported_for_evaluation():
    assert cfg.training_only_flags_given(cfg.parse_args([])) == []
    given = cfg.training_only_flags_given(cfg.parse_args(["--num_epochs", "3", "--lr_schedule", "cosine"]))
    assert given == ["--num_epochs", "--lr_schedule"]


def test_test_help_lists_only_evaluation_flags_but_accepts_the_original_ones():
    """test.py --help shows the flags evaluation reads; the original's shared flags are still accepted."""
    text = cfg.build_parser("test.py", mode="test").format_help()
    for flag in ("--resume", "--metadata_dir", "--batch_size", "--trust_checkpoint", "--model_config", "--log_dir"):
        assert flag in text, flag
    for name in cfg.HIDDEN_IN_TEST:
        assert f"--{name}" not in text, name
    assert "--num_epochs" in cfg.build_parser("train.py").format_help()
    args = cfg.parse_args(["--num_epochs", "3", "--lr_schedule", "cosine", "--checkpoint_dir", "c", "--evaluate"],
                          mode="test")
    assert (args.num_epochs, args.lr_schedule, args.checkpoint_dir, args.evaluate) == (3, "cosine", "c", True)
    assert cfg.training_only_flags_given(args) == ["--num_epochs", "--lr_schedule"]
