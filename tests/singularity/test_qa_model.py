"""QA answer ranking (spec 4.7, pitfalls 9.8 K / 9.28 F), late fusion, refused options, optional imports."""
import sys

import pytest
import torch
from omegaconf import OmegaConf

from common.errors import InputError


def test_rank_answers_clips_k_and_sorts(tiny_model_factory):
    model = tiny_model_factory("vqa").eval()
    img = torch.randn(2, 2, 3, 32, 32)
    q = {"input_ids": torch.randint(5, 30, (2, 6)), "attention_mask": torch.ones(2, 6, dtype=torch.long)}
    answers = torch.randint(5, 30, (3, 4))
    answers[:, 0] = 2
    ids, probs = model.rank_answers(img, q, answers, torch.ones_like(answers), k=128)
    assert ids.shape == (2, 3) and probs.shape == (2, 3)  # k = min(k_test, #answers)
    assert torch.all(probs[:, :-1] >= probs[:, 1:]) and torch.allclose(probs.sum(1), torch.ones(2))
    # the score counts the first token twice: log p_first + full sequence log-likelihood (9.8 K)
    q_states = model.encode_question(img, q)
    first = model.first_token_probs(answers, q_states, q["attention_mask"])
    seq = model.sequence_scores(answers, torch.ones_like(answers), torch.arange(3).repeat(2, 1), q_states,
                                q["attention_mask"])
    expected = torch.softmax(torch.log(first) + seq, dim=1)
    assert torch.allclose(expected.gather(1, ids), probs, atol=1e-5)
    model.frame_ensemble = "lse"
    ids, probs = model.rank_answers(img, q, answers, torch.ones_like(answers), k=2)
    assert ids.shape == (2, 2)


def test_refused_options():
    from singularity.evaluation import evaluation
    from singularity.models.vqa import aggregate_frames

    cfg = OmegaConf.create({"eval_x_only": True})
    with pytest.raises(ValueError, match="eval_x_only"):
        evaluation(None, None, None, torch.device("cpu"), cfg, None)
    cfg = OmegaConf.create({"eval_frame_ensemble": "max", "video_input": {"num_frames": 4}})
    with pytest.raises(ValueError, match="num_frames == 1"):
        evaluation(None, None, None, torch.device("cpu"), cfg, None)
    with pytest.raises(ValueError, match="concat, mean, max, lse"):
        aggregate_frames(torch.zeros(2, 3), "median")


def test_wandb_only_when_enabled(monkeypatch):
    from singularity.engine import Runtime, setup_wandb

    runtime = Runtime(info=None, device=torch.device("cpu"), amp_dtype=None, scaler=None)
    setup_wandb(OmegaConf.create({"wandb": {"enable": False}}), runtime, None)
    assert "wandb" not in sys.modules and runtime.wandb is None
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed
    with pytest.raises(InputError, match="wandb.enable=True"):
        setup_wandb(OmegaConf.create({"wandb": {"enable": True}}), runtime, None)
