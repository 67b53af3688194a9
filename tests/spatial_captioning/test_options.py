"""Every train.py option family runs: optimisers, schedules, losses, rewards, model variants (2 iterations each)."""
from __future__ import annotations

import math

import pytest

from sc_helpers import train_argv
from spatial_captioning.opts import parse_train_opt
from spatial_captioning.training import Trainer

CASES = {
    "sgdmom+decay": ["--optim", "sgdmom", "--learning_rate_decay_start", "0", "--learning_rate_decay_every", "1"],
    "rmsprop": ["--optim", "rmsprop", "--weight_decay", "1e-4"],
    "adagrad": ["--optim", "adagrad"],
    "plateau": ["--reduce_on_plateau", "--perform_validation_every", "1", "--val_images_use", "8"],
    "label_smoothing": ["--label_smoothing", "0.1"],
    "scst+bleu": ["--self_critical_after", "0", "--bleu_reward_weight", "0.5"],
    "ort": ["--caption_model", "ort", "--heads", "8", "--box_trignometric_embedding", "0", "--legacy_extra_skip", "1"],
    "box-coord": ["--enc_pos_type", "box-coord"],
    "sinusoidal": ["--enc_pos_embedding", "0"],
    "rms+gelu+norms": ["--norm", "RMS", "--ff_activation", "GELU", "--norm_img_feat", "1", "--norm_box_feat", "1"],
    "show_tell_gru": ["--caption_model", "show_tell", "--rnn_type", "gru", "--num_layers", "2", "--hidden_size", "32"],
    "val_beam": ["--perform_validation_every", "2", "--beam_size", "2", "--val_images_use", "8", "--language_eval", "1",
                 "--lang_metrics", "CIDEr"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_option_family_trains(name, syn, tmp_path):
    extra = list(CASES[name])
    argv = train_argv(syn, tmp_path, max_iters=2, extra=extra)
    if any(x in extra for x in ("--optim", "--reduce_on_plateau", "show_tell")) or "--self_critical_after" in extra:
        argv.remove("--noamopt")
    trainer = Trainer(parse_train_opt(argv))
    last = trainer.run()
    assert trainer.iteration == 2
    assert math.isfinite(last["loss"])
    if name == "sgdmom+decay":
        from spatial_captioning.optim import step_decay_lr

        assert trainer.current_lr() == pytest.approx(4e-4)  # decay applies once epoch > decay_start
        assert step_decay_lr(trainer.opt, 3) == pytest.approx(4e-4 * 0.8 ** 3)
