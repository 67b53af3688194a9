"""Fast paths (issue 15) against the eager fp32 path of the tiny model: KV-cached decoding, SDPA, autocast,
torch.compile, multi-tensor BertAdam, DDP's unused-parameter list. Tolerances are stated per test."""
from __future__ import annotations

import copy

import pytest
import torch

from clip4idc.decoding import beam_decode, greedy_decode
from clip4idc.optim import build_optimizer
from clip4idc.speed import autocast_for, compile_model, set_attn_implementation
from clip4idc.tokenizer import SOT_ID
from clip4idc.train import unused_parameters


def _pairs(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 28, 28, generator=g), torch.randn(n, 3, 28, 28, generator=g)


def _caption_batch(n=4, length=8, seed=2):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 49000, (n, length), generator=g)
    ids[:, 0] = SOT_ID
    out = torch.randint(1, 49000, (n, length), generator=g)
    out[1, 5:] = 0  # a shorter caption: padding in targets and mask
    mask = (out != 0).long()
    return ids, mask, out


def test_kv_cached_step_logits_equal_prefix_rerun(tiny_caption_model):
    """Every cached step's logits equal decode_step over the whole prefix (absolute 1e-4 on logits ~N(0, 5))."""
    m = tiny_caption_model
    bef, aft = _pairs()
    with torch.no_grad():
        memory = m.decoder_memory(m.encode_pair(bef, aft)[1])
        kv, self_kv = m.decode_start(memory), None
        ids = torch.full((4, 1), SOT_ID)
        for t in range(8):
            cached, self_kv = m.decode_next(kv, self_kv, ids[:, -1], t)
            full = m.decode_step(memory, ids)[:, -1]
            torch.testing.assert_close(cached, full, atol=1e-4, rtol=1e-5)
            ids = torch.cat([ids, full.argmax(-1, keepdim=True)], 1)


@pytest.mark.parametrize("beam,alpha", [(1, 0.0), (3, 0.0), (4, 1.0)], ids=["greedy", "beam3", "beam4_lp1"])
def test_kv_cached_decoding_equals_prefix_rerun(tiny_caption_model, beam, alpha):
    """The same token ids, exactly, as decoding without the cache (the code before issue 15)."""
    bef, aft = _pairs(6)
    fast = beam_decode(tiny_caption_model, bef, aft, 10, beam, alpha, use_cache=True)
    slow = beam_decode(tiny_caption_model, bef, aft, 10, beam, alpha, use_cache=False)
    assert torch.equal(fast, slow)
    assert torch.equal(greedy_decode(tiny_caption_model, bef, aft, 10), beam_decode(tiny_caption_model, bef, aft, 10, 1))


def _losses(model, bef, aft):
    ids, mask, out = _caption_batch()
    cap = model(bef, aft, in_ids=ids, dec_mask=mask, out_ids=out, no_aft=bef, no_in_ids=ids, no_dec_mask=mask,
                no_out_ids=out)
    pooled, _ = model.encode_pair(bef, aft)
    text, _ = model.encode_text(ids)
    return cap, pooled, text


def test_sdpa_equals_eager_attention(tiny_caption_model):
    """CLIP towers and decoder layers with transformers' eager attention vs SDPA: loss, pooled pair and text
    vectors within 1e-5 absolute (fp32 rounding of the fused kernel)."""
    m = tiny_caption_model.train()
    m.decoder.embeddings_dropout.p = 0.0
    for mod in m.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    bef, aft = _pairs()
    assert set_attn_implementation(m, "sdpa") >= 3
    sdpa = _losses(m, bef, aft)
    set_attn_implementation(m, "eager")
    eager = _losses(m, bef, aft)
    for a, b in zip(sdpa, eager):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_bf16_autocast_close_to_fp32(tiny_caption_model):
    """bf16 autocast keeps ~3 significant digits: caption loss within 2 % of fp32, pooled vectors within 5e-2."""
    m = tiny_caption_model
    bef, aft = _pairs()
    with torch.no_grad():
        ref = _losses(m, bef, aft)
        with autocast_for("cpu", bf16=True):
            half = _losses(m, bef, aft)
    assert abs(half[0].float() - ref[0]) / ref[0] < 0.02
    torch.testing.assert_close(half[1].float(), ref[1], atol=5e-2, rtol=5e-2)
    with pytest.raises(ValueError, match="needs CUDA"):
        autocast_for("cpu", fp16=True)


def test_compiled_model_equals_eager(tiny_caption_model):
    """torch.compile of the pair encoder, text tower and decoder layers (aot_eager backend: the same captured
    graphs inductor compiles; inductor itself is timed by benchmarks/clip4idc.py): caption loss and pooled
    pair vectors equal within 1e-5; state_dict keys unchanged."""
    m = tiny_caption_model
    bef, aft = _pairs()
    ids, mask, out = _caption_batch()
    keys = list(m.state_dict())

    def outputs():
        return m(bef, aft, in_ids=ids, dec_mask=mask, out_ids=out), m.encode_pair(bef, aft)[0]

    with torch.no_grad():
        ref = outputs()
        compile_model(m, backend="aot_eager")
        got = outputs()
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert list(m.state_dict()) == keys


def test_foreach_bertadam_equals_loop(tiny_caption_model, monkeypatch):
    """Multi-tensor BertAdam = the original's per-tensor loop, bit for bit, over 3 steps of real gradients
    (including a tensor whose step count lags because it had no grad in one step; small chunks so that a
    group spans several multi-tensor updates)."""
    monkeypatch.setattr("clip4idc.optim.FOREACH_CHUNK", 200_000)
    a = tiny_caption_model.train()
    b = copy.deepcopy(a)
    opts = [build_optimizer(a, "caption", 1e-3, 0.1, 10, 0.1, foreach=False),
            build_optimizer(b, "caption", 1e-3, 0.1, 10, 0.1, foreach=True)]
    bef, aft = _pairs()
    for step in range(3):
        for model, opt in zip((a, b), opts):
            torch.manual_seed(step)  # the same dropout masks in both
            _losses(model, bef, aft)[0].backward()
            if step == 1:
                model.decoder.head_bias.grad = None
            opt.step()
            opt.zero_grad()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name


def test_ddp_unused_parameters_are_those_without_grad(tiny_caption_model):
    """find_unused_parameters is set only when the stage really leaves trainable parameters without a grad:
    the list equals the parameters that get no grad from a caption step (text tower, temperature)."""
    m = tiny_caption_model.train()
    bef, aft = _pairs()
    ids, mask, out = _caption_batch()
    m(bef, aft, in_ids=ids, dec_mask=mask, out_ids=out).backward()
    no_grad = sorted(n for n, p in m.named_parameters() if p.grad is None)
    assert sorted(unused_parameters(m, "caption")) == no_grad and no_grad
    from clip4idc.models import build_model, load_clip_config

    r = build_model(load_clip_config("tiny"), None, "retrieval")
    r(bef, aft, text_ids=ids).backward()
    assert unused_parameters(r, "retrieval") == [n for n, p in r.named_parameters() if p.grad is None] == []
