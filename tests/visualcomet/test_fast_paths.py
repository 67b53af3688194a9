"""Issue 15 fast paths, each against the eager fp32 path: SDPA, bf16 autocast, torch.compile, foreach/fused AdamW,
and the batched beam search against the per-prompt reference searches."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from visualcomet.generation import amp_context, beam_search_batch, beam_search_clean, beam_search_original
from visualcomet.model import VisualCometLMHead, make_config
from visualcomet.optim import OriginalAdamW
from visualcomet.training import autocast, build_optimizer

VOCAB, FEAT = 96, 16


def _model(seed: int = 0) -> VisualCometLMHead:
    torch.manual_seed(seed)
    model = VisualCometLMHead(make_config(vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=32, feature_dim=FEAT,
                                          n_positions=64, max_event=7, max_place=5, max_inference=7))
    return model.eval()  # no dropout: the paths are compared on the same function (gradients still flow)


def _batch(b: int = 3, length: int = 24, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, 15, dtype=torch.long)
    for i in range(b):
        mask[i, :2 + i] = 1
    ids = torch.randint(0, VOCAB, (b, length), generator=g)
    labels = ids.clone()
    labels[:, :12] = -100
    return {"input_ids": ids, "img_feats": torch.randn(b, 15, FEAT, generator=g), "boxes_mask": mask,
            "person_ids": torch.randint(0, VOCAB, (b, 15), generator=g),
            "subject_ids": torch.zeros(b, 15, dtype=torch.long), "labels": labels}


def _loss_and_grads(model: VisualCometLMHead, batch: dict, ctx=None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    model.zero_grad()
    with ctx if ctx is not None else torch.enable_grad():
        out = model(**batch)
    out["loss"].backward()
    return out["logits"].detach().float(), out["loss"].detach(), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_sdpa_equals_eager_attention():
    """Fused scaled_dot_product_attention vs the original's eager attention: logits and gradients within 1e-5."""
    model, batch = _model(), _batch()
    model.set_attn_implementation("eager")
    logits_e, loss_e, grads_e = _loss_and_grads(model, batch)
    model.set_attn_implementation("sdpa")
    logits_s, loss_s, grads_s = _loss_and_grads(model, batch)
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(logits_s, logits_e, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss_s, loss_e, atol=1e-6, rtol=1e-6)
    assert grads_s.keys() == grads_e.keys() and "transformer.detector.obj_downsample.1.weight" in grads_s
    for name in grads_e:
        torch.testing.assert_close(grads_s[name], grads_e[name], atol=1e-5, rtol=1e-4, msg=name)


def test_bf16_autocast_close_to_fp32():
    """--bf16 (CPU autocast) vs fp32: loss within 1% and logits within 0.05 (bf16 keeps 8 mantissa bits)."""
    model, batch = _model(), _batch()
    logits, loss, _ = _loss_and_grads(model, batch)
    args = SimpleNamespace(fp16=False, bf16=True)
    logits_b, loss_b, grads_b = _loss_and_grads(model, batch, autocast(args, torch.device("cpu")))
    assert abs(loss_b.item() - loss.item()) < 0.01 * loss.item()
    torch.testing.assert_close(logits_b, logits, atol=5e-2, rtol=0)
    assert all(torch.isfinite(g).all() for g in grads_b.values())
    with torch.no_grad(), amp_context("bf16", torch.device("cpu")):  # the inference scripts' --amp bf16
        logits_i = model.eval()(**batch)["logits"].float()
    torch.testing.assert_close(logits_i, logits, atol=5e-2, rtol=0)


def test_compile_equals_eager_training_steps(vc_data, vc_train_argv, tmp_path):
    """--compile through the real training loop: weights after 2 steps equal eager within 1e-5.

    The test compiles with the aot_eager backend (AOTAutograd graphs for forward and backward, no code generation)
    because inductor needs minutes on a 2-core CPU; ``--compile_backend inductor`` is the default of the flag.
    """
    from visualcomet.scripts.run_finetuning import build_parser
    from visualcomet.training import train

    def weights(out):
        train(build_parser().parse_args(vc_train_argv(vc_data, out, "--do_eval", "false", steps=2) + extra))
        return VisualCometLMHead.from_pretrained(out).state_dict()

    extra = []
    eager = weights(tmp_path / "eager")
    extra = ["--compile", "--compile_backend", "aot_eager"]
    compiled = weights(tmp_path / "compiled")
    assert eager.keys() == compiled.keys()
    for k in eager:
        torch.testing.assert_close(compiled[k], eager[k], atol=1e-5, rtol=1e-5, msg=k)


def test_foreach_original_adamw_is_bit_identical():
    """The multi-tensor OriginalAdamW (default) equals 2.4.1's per-parameter loop exactly, weight decay included."""
    a, batch = _model(), _batch()
    b = copy.deepcopy(a)
    opts = []
    for model, foreach in ((a, False), (b, True)):
        decay = [p for n, p in model.named_parameters() if not n.endswith("bias")]
        rest = [p for n, p in model.named_parameters() if n.endswith("bias")]
        opts.append(OriginalAdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                                  lr=1e-2, eps=1e-8, foreach=foreach))
    for _ in range(3):
        for model, opt in zip((a, b), opts):
            opt.zero_grad()
            model(**batch)["loss"].backward()
            opt.step()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fused AdamW is the CUDA path")
def test_fused_torch_adamw_close_to_foreach_on_cuda():
    """--adamw torch on CUDA uses fused kernels: parameters within 1e-6 of the foreach AdamW after 3 steps."""
    args = SimpleNamespace(weight_decay=0.01, learning_rate=1e-3, adam_epsilon=1e-8, adamw="torch", adamw_loop=False)
    a, batch = _model().cuda(), {k: v.cuda() for k, v in _batch().items()}
    b = copy.deepcopy(a)
    fused = build_optimizer(a, args)
    assert fused.defaults["fused"] is True
    plain = torch.optim.AdamW(b.parameters(), lr=1e-3, eps=1e-8, weight_decay=0.01, foreach=True)
    for model, opt in ((a, fused), (b, plain)):
        for _ in range(3):
            opt.zero_grad()
            model(**batch)["loss"].backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------- beam search
class _Cache:
    def reorder_cache(self, beam_idx):  # a bigram model has no state
        pass


class _RandomBigram(torch.nn.Module):
    """Next-token log-probabilities depend on the last token only; identical rows whatever the batch."""

    def __init__(self, vocab: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.log_softmax(2.5 * torch.randn(vocab, vocab, generator=g), -1),
                                        requires_grad=False)
        self.config = SimpleNamespace(vocab_size=vocab)

    def forward(self, input_ids, cache=None, use_cache=False, **_):
        return {"logits": self.table[input_ids], "cache": cache or _Cache()}


@pytest.mark.parametrize("variant", ["original", "clean"])
@pytest.mark.parametrize("seed, beams, length, penalty", [(0, 3, 6, 1.0), (1, 4, 5, 1.0), (2, 2, 7, 0.7),
                                                          (3, 5, 4, 1.3)])
def test_batched_beam_search_equals_per_prompt(variant, seed, beams, length, penalty):
    """beam_search_batch over 6 prompts = the per-prompt reference, hypotheses, order and scores (1e-9)."""
    vocab, e_in = 12, 3
    model = _RandomBigram(vocab, seed)
    prompts = torch.tensor([[5, t] for t in range(6)])
    reference = beam_search_original if variant == "original" else beam_search_clean
    batched = beam_search_batch(model, prompts, None, beams, length, e_in, penalty, variant, return_scores=True)
    for prompt, got in zip(prompts, batched):
        want = reference(model, prompt, None, num_beams=beams, length=length, e_in_id=e_in, length_penalty=penalty,
                         return_scores=True)
        assert [seq for _, seq in got] == [seq for _, seq in want]
        assert [s for s, _ in got] == pytest.approx([s for s, _ in want], abs=1e-9)


@pytest.mark.parametrize("variant", ["original", "clean"])
def test_batched_beam_search_with_images_and_kv_cache(variant):
    """On a GPT-2 with images (KV cache reordered per step), batched = per prompt (tokens; scores within 1e-5)."""
    model, batch = _model().eval(), _batch(b=3, length=20)
    visual = {k: batch[k] for k in ("img_feats", "boxes_mask", "person_ids", "subject_ids")}
    reference = beam_search_original if variant == "original" else beam_search_clean
    batched = beam_search_batch(model, batch["input_ids"], visual, 3, 5, 7, 1.0, variant, return_scores=True)
    for i, got in enumerate(batched):
        want = reference(model, batch["input_ids"][i], {k: v[i:i + 1] for k, v in visual.items()}, num_beams=3,
                         length=5, e_in_id=7, return_scores=True)
        assert [seq for _, seq in got] == [seq for _, seq in want]
        assert [s for s, _ in got] == pytest.approx([s for s, _ in want], abs=1e-5)


def test_batched_sampling_equals_per_prompt_with_different_box_counts():
    """Prompts with 2, 3 and 4 boxes sampled together = each alone (the batch's zero-filled slots do not leak)."""
    from visualcomet.generation import sample_sequence

    model, batch = _model(), _batch(b=3, length=20)
    visual = {k: batch[k] for k in ("img_feats", "boxes_mask", "person_ids", "subject_ids")}
    together = sample_sequence(model, batch["input_ids"], visual, length=6, num_samples=4, seed=3)
    alone = torch.cat([sample_sequence(model, batch["input_ids"][i:i + 1], {k: v[i:i + 1] for k, v in visual.items()},
                                       length=6, num_samples=4, seed=3) for i in range(3)])
    assert torch.equal(together, alone)
    assert model.zero_fill_visual_slots  # training's behaviour is restored afterwards
