"""Spec 5.2 / 5.4 / 9.10 / 9.11: BertAdam semantics, schedules, parameter groups and freezing."""
import math

import pytest
import torch

from clip4idc.convert import default_model
from clip4idc.optim import (BertAdam, build_optimizer, freeze_layers, original_param_name, param_groups,
                            warmup_constant, warmup_cosine, warmup_linear)


def test_schedules():
    assert warmup_linear(0.05, 0.1) == pytest.approx(0.5)
    assert warmup_linear(0.55, 0.1) == pytest.approx(0.5)
    assert warmup_linear(1.0, 0.1) == 0.0 and warmup_linear(1.5, 0.1) == 0.0
    assert warmup_cosine(0.05, 0.1) == pytest.approx(0.5)
    assert warmup_cosine(0.5, 0.1) == pytest.approx(0.5)  # not renormalised after warmup
    assert warmup_cosine(0.1, 0.1) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)))
    assert warmup_constant(0.7, 0.1) == 1.0


def test_first_step_has_lr_zero_and_no_bias_correction():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = BertAdam([p], lr=0.1, warmup=0.5, t_total=10, schedule="warmup_linear", weight_decay=0.0,
                   max_grad_norm=-1, b1=0.9, b2=0.999, e=1e-6)
    p.grad = torch.tensor([0.5, 0.5])
    opt.step()
    torch.testing.assert_close(p.data, torch.tensor([1.0, -2.0]))  # LR 0 at step 0
    p.grad = torch.tensor([0.5, 0.5])
    opt.step()
    m = 0.9 * 0.05 + 0.1 * 0.5
    v = 0.999 * 0.00025 + 0.001 * 0.25
    expected = 1.0 - 0.1 * (1 / 10 / 0.5) * m / (math.sqrt(v) + 1e-6)
    assert p.data[0].item() == pytest.approx(expected, rel=1e-5)


def test_per_tensor_clipping_and_weight_decay():
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = BertAdam([p], lr=1.0, t_total=-1, weight_decay=0.5, max_grad_norm=1.0)
    p.grad = torch.tensor([30.0, 40.0])
    opt.step()
    torch.testing.assert_close(opt.state[p]["next_m"], torch.tensor([0.1 * 0.6, 0.1 * 0.8]))
    assert opt.get_lr() == [1.0]
    assert opt.schedule_lrs() == [1.0]


def test_param_groups_match_original_counts():
    for stage, counts in (("retrieval", [155, 4, 147, 1]), ("caption", [159, 49, 148, 84])):
        model = default_model(stage)
        groups = param_groups(model, stage, 1e-4, 1e-3, 0.2)
        got = [len({original_param_name(n) for n, p in model.named_parameters() if any(p is q for q in g["params"])})
               for g in groups]
        assert got == counts
        assert groups[0]["lr"] == pytest.approx(1e-7) and "lr" not in groups[1]


def test_clip_layernorms_are_decayed_decoder_ones_not():
    model = default_model("caption")
    groups = param_groups(model, "caption", 1e-4, 1e-3, 0.01)
    decay = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    named = dict(model.named_parameters())
    assert id(named["clip.visual.layers.0.layer_norm1.weight"]) in decay
    assert id(named["decoder.embeddings_norm.weight"]) not in decay


def test_freeze_list_and_tied_embeddings():
    model = default_model("caption")
    frozen = freeze_layers(model, 0, "caption", "clevr")
    assert sorted(frozen) == sorted(["positional_embedding", "visual.class_embedding", "visual.positional_embedding",
                                     "visual.conv1.weight", "visual.ln_pre.weight", "visual.ln_pre.bias",
                                     "token_embedding.weight"])
    # spec 9.11 (kept): the decoder's word embeddings / output projection ARE the frozen token embedding
    assert model.word_weight.requires_grad is False
    assert model.decoder.head_bias.requires_grad is True
    spot = default_model("caption")
    assert "token_embedding.weight" not in freeze_layers(spot, 0, "caption", "spot")
    partial = default_model("retrieval")
    frozen = freeze_layers(partial, 3, "retrieval", "clevr")
    assert "visual.transformer.resblocks.2.attn.in_proj_weight" in frozen
    assert "transformer.resblocks.3.ln_1.weight" not in frozen
    assert freeze_layers(default_model("retrieval"), -1, "retrieval", "clevr") == []


def test_optimizer_recipes():
    model = default_model("retrieval")
    opt = build_optimizer(model, "retrieval", 1e-4, 1e-3, 100, 0.1)
    assert opt.param_groups[0]["schedule"] == "warmup_cosine" and opt.param_groups[0]["b2"] == 0.98
    assert opt.param_groups[0]["weight_decay"] == 0.2
    opt = build_optimizer(default_model("caption"), "caption", 1e-4, 1e-3, 100, 0.1)
    assert opt.param_groups[1]["schedule"] == "warmup_linear" and opt.param_groups[1]["b2"] == 0.999
