"""Fast paths (issue 15) against the eager fp32 path: SDPA, autocast, torch.compile, fused Adam, trainer flags."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from sc_helpers import train_argv
from spatial_captioning import losses, models
from spatial_captioning.models.attention import set_attention_impl
from spatial_captioning.opts import parse_train_opt
from spatial_captioning.optim import build_optimizer, clip_gradient
from spatial_captioning.speed import autocast, compile_model
from spatial_captioning.training import Trainer

SMALL = dict(vocab_size=30, seq_length=8, input_encoding_size=32, img_feat_size=24, num_layers=2, ff_size=48, heads=8,
             dropout=0.1, num_grids=16, enc_pos_embedding=True, enc_pos_type="gxg", norm="layer",
             ff_activation="RELU", unk_index=None)


def _model(caption_model: str, cross_attn: str = "xlinear", seed: int = 0) -> models.CaptionModel:
    torch.manual_seed(seed)
    return models.setup(SimpleNamespace(**SMALL, caption_model=caption_model, cross_attn=cross_attn,
                                        use_grid=caption_model == "spatial_pe")).eval()


def _batch(caption_model: str, n: int = 4, regions: int = 7, seed: int = 0) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, regions, SMALL["img_feat_size"], generator=gen)
    masks = torch.ones(n, regions)
    masks[0, 4:] = 0  # one padded image: masked keys must stay masked on every path
    if caption_model == "spatial_pe":
        boxes = torch.rand(n, regions, SMALL["num_grids"], generator=gen)
    else:
        xy = torch.rand(n, regions, 2, generator=gen) * 0.5
        boxes = torch.cat([xy, xy + 0.1 + 0.3 * torch.rand(n, regions, 2, generator=gen)], -1)
    labels = torch.randint(1, SMALL["vocab_size"] + 1, (n, SMALL["seq_length"] + 2), generator=gen)
    labels[:, 0] = 0
    labels[1, -3:] = 0  # padded caption: the target mask hides its pad keys
    return feats, masks, boxes, labels


@pytest.mark.parametrize("caption_model,cross_attn", [("spatial_pe", "xlinear"), ("transformer", "dot-product"),
                                                      ("relation_transformer", "xlinear")],
                         ids=["spatial_pe-xlinear", "transformer-dotproduct", "ort-geometry-mask"])
def test_sdpa_equals_eager_forward_and_beam_search(caption_model, cross_attn):
    """Tolerance: 1e-5 absolute on log-probs (fp32 reassociation only); beam search picks the same words."""
    model = _model(caption_model, cross_attn)
    feats, masks, boxes, labels = _batch(caption_model)
    with torch.no_grad():
        eager = model(feats, labels, masks, boxes)
        seq_e, lp_e = model(feats, masks, boxes, opt={"beam_size": 3}, mode="sample")
        set_attention_impl(model, "sdpa")
        fast = model(feats, labels, masks, boxes)
        seq_f, lp_f = model(feats, masks, boxes, opt={"beam_size": 3}, mode="sample")
    torch.testing.assert_close(fast, eager, atol=1e-5, rtol=0)
    assert torch.equal(seq_f, seq_e)
    torch.testing.assert_close(lp_f, lp_e, atol=1e-5, rtol=0)


def test_sdpa_gradients_equal_eager_without_dropout():
    """Training path (backward through the fused kernel); dropout 0 so both paths are deterministic. Tol 1e-5."""
    grads = {}
    for impl in ("eager", "sdpa"):
        torch.manual_seed(0)
        model = models.setup(SimpleNamespace(**{**SMALL, "dropout": 0.0}, caption_model="relation_transformer",
                                             cross_attn="xlinear", use_grid=False)).train()
        for module in model.modules():  # ORT's transformer dropout is a hard 0.1: switch it off for the comparison
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        set_attention_impl(model, impl)
        feats, masks, boxes, labels = _batch("relation_transformer")
        model(feats, labels, masks, boxes).sum().backward()
        grads[impl] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    torch.testing.assert_close(grads["sdpa"], grads["eager"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_xe_loss_and_scst_sampling_close_to_fp32(amp):
    """Tolerance: XE loss within 2% of fp32 (bf16 has 8 mantissa bits); sampled log-probs finite and within 0.1."""
    model = _model("spatial_pe")
    crit = losses.xe_criterion("spatial_pe", SMALL["vocab_size"], 0.0)
    feats, masks, boxes, labels = _batch("spatial_pe")
    lmask = (labels > 0).float()
    lmask[:, :2] = 1
    with torch.no_grad():
        ref = crit(model(feats, labels, masks, boxes), labels[:, 1:], lmask[:, 1:])
        with autocast("cpu", amp):
            low = crit(model(feats, labels, masks, boxes), labels[:, 1:], lmask[:, 1:])
            torch.manual_seed(1)
            seq_a, lp_a = model(feats, masks, boxes, opt={"sample_max": 1}, mode="sample")
        seq_r, lp_r = model(feats, masks, boxes, opt={"sample_max": 1}, mode="sample")
    assert low.dtype == torch.float32 and torch.isfinite(low)
    assert float(low) == pytest.approx(float(ref), rel=2e-2)
    assert lp_a.dtype == torch.float32 and bool(torch.isfinite(lp_a).all())
    first = seq_a[:, 0] == seq_r[:, 0]  # greedy words agree where the fp32 margin is not below rounding
    assert bool(first.all())
    torch.testing.assert_close(lp_a[:, 0], lp_r[:, 0], atol=0.1, rtol=0)


def test_compiled_encoder_decoder_equal_eager():
    """torch.compile of the stacks (dynamo graphs + AOT autograd; inductor's C++ codegen takes minutes on 2 busy cores,
    the benchmark's compile row runs it); state_dict keys unchanged. Tolerance 1e-5 absolute on log-probs."""
    model = _model("transformer", "dot-product")
    feats, masks, boxes, labels = _batch("transformer")
    keys = list(model.state_dict())
    with torch.no_grad():
        eager = model(feats, labels, masks, boxes)
        compile_model(model, backend="aot_eager")
        fast = model(feats, labels, masks, boxes)
    torch.testing.assert_close(fast, eager, atol=1e-5, rtol=0)
    assert list(model.state_dict()) == keys


def test_fused_adam_steps_equal_default_adam():
    """The fused kernel (used on CUDA; also on CPU) matches the default Adam after 3 clipped steps at lr 1e-3.

    Tolerance 1e-4 absolute (a tenth of one step): the kernel divides in another order, which moves parameters whose
    second moment is tiny by a few 1e-5."""
    opt = SimpleNamespace(optim="adam", learning_rate=1e-3, weight_decay=0.0, optim_alpha=0.9, optim_beta=0.999,
                          optim_epsilon=1e-8)
    feats, masks, boxes, labels = _batch("spatial_pe")
    params = {}
    for fused in (False, True):
        model = _model("spatial_pe").train()
        optimizer = build_optimizer(model.parameters(), opt, fused=fused)
        assert optimizer.defaults["fused"] is (True if fused else None)
        torch.manual_seed(5)
        for _ in range(3):
            optimizer.zero_grad()
            model(feats, labels, masks, boxes).mean().backward()
            clip_gradient(optimizer, 0.1)
            optimizer.step()
        params[fused] = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.testing.assert_close(params[True], params[False], atol=1e-4, rtol=0)


def test_trainer_fast_flags_xe_then_scst_fp16_scaler_and_metrics_log(syn, tmp_path):
    """train.py --attn_impl sdpa --amp fp16 (grad scaler through the Noam wrapper), XE then SCST; metrics.jsonl."""
    argv = train_argv(syn, tmp_path / "run", max_iters=4,
                      extra=["--attn_impl", "sdpa", "--amp", "fp16", "--batch_size", "2", "--self_critical_after", "1",
                             "--losses_log_every", "2", "--num_threads", "1"])
    trainer = Trainer(parse_train_opt(argv))  # 4 iterations stay in epoch 0: XE
    assert trainer.scaler is not None
    assert all(m.attn_impl == "sdpa" for m in trainer.model.modules() if hasattr(m, "attn_impl"))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.run()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {r["name"] for r in records} == {"loss", "lr"}
    assert [r["step"] for r in records if r["name"] == "loss"] == [2, 4]
    assert all(r["split"] == "train" for r in records)
    # SCST step under autocast: sampling with grad, greedy baseline, reward loss that backpropagates
    batch = next(iter(trainer.loader))
    trainer.model.train()
    loss, stats = trainer.scst_step(batch)
    trainer.optimizer_step(loss)
    assert torch.isfinite(loss) and "avg_reward" in stats
