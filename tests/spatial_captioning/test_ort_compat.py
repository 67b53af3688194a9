"""ORT users' commands and run files (issue 17, items 1-2): ORT's option names, models rebuilt from ORT infos,
ORT's label-smoothing formula for the ORT model."""
from __future__ import annotations

import json
import math
import pickle
from argparse import Namespace
from pathlib import Path

import pytest
import torch

from common.errors import InputError, run_cli
from spatial_captioning import eval as eval_cli
from spatial_captioning.data import load_cocotalk
from spatial_captioning.losses import xe_criterion
from spatial_captioning.models import setup
from spatial_captioning.opts import parse_train_opt, train_parser
from spatial_captioning.training import Trainer

ORT_SIZES = {"rnn_size": 64, "num_layers": 1, "input_encoding_size": 64, "att_feat_size": 32}


def ort_data_flags(syn: dict) -> list[str]:
    """The data flags of ORT's README commands, pointing at the synthetic set."""
    return ["--input_json", str(syn["input_json"]), "--input_fc_dir", str(syn["input_fc_feat_dir"]),
            "--input_att_dir", str(syn["input_img_feat_dir"]), "--input_box_dir", str(syn["input_box_dir"]),
            "--input_rel_box_dir", str(syn["input_rel_box_dir"]), "--input_label_h5", str(syn["input_label_h5"])]


def write_ort_run(syn: dict, run_dir: Path, run_id: str, best: bool) -> Path:
    """A run directory as ORT's train.py leaves it: py2-protocol infos with an argparse.Namespace in ORT's
    option names (rnn_size = d_ff 64, not the 2048 default) and the relation transformer's state dict."""
    vocab = load_cocotalk(syn["input_json"])["ix_to_word"]
    opt = Namespace(caption_model="relation_transformer", rnn_type="lstm", att_hid_size=512, fc_feat_size=32,
                    logit_layers=1, use_bn=0, norm_att_feat=0, use_box=1, norm_box_feat=0, drop_prob_lm=0.5,
                    batch_size=8, seq_per_img=5, beam_size=1, vocab_size=len(vocab), seq_length=10,
                    input_json=str(syn["input_json"]), input_fc_dir=str(syn["input_fc_feat_dir"]),
                    input_att_dir=str(syn["input_img_feat_dir"]), input_box_dir=str(syn["input_box_dir"]),
                    input_rel_box_dir=str(syn["input_rel_box_dir"]), input_label_h5=str(syn["input_label_h5"]),
                    id=run_id, label_smoothing=0.0, noamopt=True, **ORT_SIZES)
    torch.manual_seed(0)
    model = setup(Namespace(caption_model="ort", ff_size=64, num_layers=1, input_encoding_size=64, img_feat_size=32,
                            vocab_size=len(vocab), seq_length=10))
    run_dir.mkdir(parents=True)
    name = "model-best.pth" if best else "model.pth"
    torch.save(model.state_dict(), run_dir / name)
    infos = {"iter": 3, "epoch": 0, "iterators": {"train": 24, "val": 0, "test": 0}, "best_val_score": None,
             "opt": opt, "vocab": vocab}
    path = run_dir / (f"infos_{run_id}-best.pkl" if best else f"infos_{run_id}.pkl")
    path.write_bytes(pickle.dumps(infos, protocol=2))
    return path


def test_ort_readme_train_command_parses_and_help_lists_the_names(syn, tmp_path):
    argv = ["--id", "relation_transformer_bu", "--caption_model", "relation_transformer", *ort_data_flags(syn),
            "--checkpoint_path", str(tmp_path / "log"), "--noamopt", "--noamopt_warmup", "10000",
            "--label_smoothing", "0.0", "--batch_size", "15", "--learning_rate", "5e-4", "--num_layers", "6",
            "--input_encoding_size", "512", "--rnn_size", "2048", "--learning_rate_decay_start", "0",
            "--scheduled_sampling_start", "0", "--save_checkpoint_every", "6000", "--language_eval", "1",
            "--val_images_use", "5000", "--max_epochs", "30", "--use_box", "1", "--att_feat_size", "1024",
            "--drop_prob_lm", "0.3", "--norm_att_feat", "1"]
    opt = parse_train_opt(argv)
    assert (opt.ff_size, opt.img_feat_size, opt.dropout, opt.norm_img_feat) == (2048, 1024, 0.3, 1)
    assert opt.input_img_feat_dir == str(syn["input_img_feat_dir"])
    assert opt.input_fc_feat_dir == str(syn["input_fc_feat_dir"])
    assert not hasattr(opt, "rnn_size")  # stored under this implementation's name only
    help_text = train_parser().format_help()
    for name in ("--rnn_size", "--input_fc_dir", "--input_att_dir", "--att_feat_size", "--drop_prob_lm",
                 "--norm_att_feat", "--fc_feat_size", "--use_bn"):
        assert name in help_text, name
    with pytest.raises(SystemExit, match="disagree"):
        parse_train_opt([*argv, "--ff_size", "512"])
    with pytest.raises(SystemExit, match="use_bn"):
        parse_train_opt([*argv, "--use_bn", "1"])
    show_tell = parse_train_opt(["--caption_model", "show_tell", "--rnn_size", "96", "--fc_feat_size", "32"])
    assert (show_tell.hidden_size, show_tell.img_feat_size, show_tell.ff_size) == (96, 32, 512)


def test_eval_rebuilds_the_model_from_ort_infos(syn, tmp_path, monkeypatch, capsys):
    """ORT's README eval command on an ORT run whose d_ff (rnn_size 64) is not the default."""
    monkeypatch.chdir(tmp_path)
    infos = write_ort_run(syn, tmp_path / "log_ort", "ort", best=True)
    run_cli(eval_cli.main, ["--dump_images", "0", "--num_images", "4", "--model",
                            str(tmp_path / "log_ort" / "model-best.pth"), "--infos_path", str(infos),
                            *ort_data_flags(syn), "--use_box", "1", "--language_eval", "0", "--device", "cpu",
                            "--beam_size", "1", "--verbose_beam", "0"])
    preds = json.loads((tmp_path / "log_ort" / "vis" / "vis.json").read_text())
    assert len(preds) == 4 and all(p["caption"] for p in preds)


def test_resuming_an_ort_run_takes_its_architecture_from_the_infos(syn, tmp_path):
    """ORT's SCST-style resume without --rnn_size: the d_ff of 64 comes from the infos, not the 512 default."""
    write_ort_run(syn, tmp_path / "log_ort", "ort", best=False)
    argv = ["--id", "ort", "--caption_model", "relation_transformer", *ort_data_flags(syn),
            "--checkpoint_path", str(tmp_path / "log_ort_rl"), "--start_from", str(tmp_path / "log_ort"),
            "--batch_size", "8", "--num_layers", "1", "--input_encoding_size", "64", "--use_box", "1",
            "--max_iters", "4", "--save_checkpoint_every", "4", "--perform_validation_every", "100000",
            "--device", "cpu", "--seed", "0"]
    trainer = Trainer(parse_train_opt(argv))
    assert trainer.model.ff_size == 64 and trainer.model.img_feat_size == 32 and trainer.iteration == 3
    last = trainer.run()
    assert trainer.iteration == 4 and math.isfinite(last["loss"])
    with pytest.raises(InputError, match="disagree on 'ff_size'"):
        Trainer(parse_train_opt([*argv, "--rnn_size", "2048"]))


@pytest.mark.parametrize("caption_model, expected", [
    # ORT: size = V+1 outputs, off-target s/(size-1) = 0.2/4 = 0.05; target 0.8; log-probs uniform log(1/5):
    # 0.8 ln(0.8*5) + 4 * 0.05 ln(0.05*5) = 0.8 ln 4 - 0.2 ln 4 = 0.6 ln 4
    ("ort", 0.6 * math.log(4)),
    ("relation_transformer", 0.6 * math.log(4)),
    # Spatial seed: off-target s/(V-1) = 0.2/3: 0.8 ln 4 + 4 * (0.2/3) ln((0.2/3)*5)
    ("spatial_pe", 0.8 * math.log(4) + 4 * (0.2 / 3) * math.log(1 / 3)),
    ("transformer", 0.8 * math.log(4) + 4 * (0.2 / 3) * math.log(1 / 3)),
])
def test_label_smoothing_uses_each_originals_formula(caption_model, expected):
    V = 4
    logp = torch.full((1, 1, V + 1), math.log(1 / (V + 1)))
    loss = xe_criterion(caption_model, V, 0.2)(logp, torch.tensor([[2]]), torch.ones(1, 1))
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.8317766 if caption_model in ("ort", "relation_transformer") else 0.8160722,
                                     abs=1e-7)
