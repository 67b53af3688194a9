"""Fast paths (issue 15) against the eager fp32 path: SDPA, autocast, torch.compile, fused AdamW, batched ITM
re-ranking, DDP's unused-parameter search, and the command-line flags that switch them on."""
import pytest
import torch
from omegaconf import OmegaConf

from common.errors import InputError


def _batch(n: int = 4, frames: int = 1, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n, frames, 3, 32, 32, generator=gen)
    ids = torch.randint(5, 64, (n, 8), generator=gen)
    mask = torch.ones(n, 8, dtype=torch.long)
    mask[1::2, 5:] = 0  # padded captions take the masked-attention path
    ids[:, 0] = 2
    return images, {"input_ids": ids * mask, "attention_mask": mask}, torch.arange(n)


def _outputs(model, images, text):
    """Visual memory, text states and ITM logits of the aligned pairs (no sampling involved)."""
    with torch.no_grad():
        tokens, pooled = model.encode_image(images)
        hidden, cls = model.encode_text(text)
        logits = model.itm_logits(hidden, text["attention_mask"], tokens)
    return tokens, pooled, hidden, logits


@pytest.mark.parametrize("task", ["retrieval", "vqa"])
def test_sdpa_equals_eager_attention(tiny_model_factory, task):
    eager = tiny_model_factory(task, attn_implementation="eager").eval()
    sdpa = tiny_model_factory(task, attn_implementation="sdpa").eval()
    assert eager.vision_encoder.config._attn_implementation == "eager"
    assert sdpa.text_bert.encoder.layer[-1].crossattention.self.config._attn_implementation == "sdpa"
    sdpa.load_state_dict(eager.state_dict())
    images, text, _ = _batch()
    if task == "retrieval":
        for a, b in zip(_outputs(eager, images, text), _outputs(sdpa, images, text)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)  # fp32 kernels differ only in summation order
    else:
        answers = torch.randint(5, 64, (6, 4), generator=torch.Generator().manual_seed(1))
        answers[:, 0] = 2
        a_mask = torch.ones_like(answers)
        ids_e, p_e = eager.rank_answers(images, text, answers, a_mask, 3)
        ids_s, p_s = sdpa.rank_answers(images, text, answers, a_mask, 3)
        assert torch.equal(ids_e, ids_s)
        torch.testing.assert_close(p_e, p_s, atol=1e-5, rtol=1e-5)


def test_training_losses_and_gradients_equal_under_sdpa(tiny_model_factory):
    eager = tiny_model_factory("retrieval", attn_implementation="eager").train()
    sdpa = tiny_model_factory("retrieval").train()
    sdpa.load_state_dict(eager.state_dict())
    images, text, idx = _batch()
    grads = []
    for model in (eager, sdpa):
        torch.manual_seed(3)  # same hard negatives drawn
        losses = model(images, text, idx)
        sum(losses.values()).backward()
        grads.append((losses, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (le, ge), (ls, gs) = grads
    for key in le:
        torch.testing.assert_close(le[key], ls[key], atol=1e-5, rtol=1e-5)
    assert ge.keys() == gs.keys()
    for name in ge:
        torch.testing.assert_close(ge[name], gs[name], atol=1e-4, rtol=1e-3)


def test_bf16_autocast_close_to_fp32(tiny_model_factory):
    model = tiny_model_factory("retrieval").eval()
    images, text, _ = _batch()
    full = _outputs(model, images, text)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = _outputs(model, images, text)
    assert half[-1].dtype == torch.bfloat16  # autocast really ran the linear layers in bf16
    for a, b in zip(full, half):
        # bf16 keeps 8 bits of mantissa: 2-3 significant digits through a few layers
        torch.testing.assert_close(b.float(), a, atol=5e-2, rtol=5e-2)


def test_compile_equals_eager(tiny_model_factory):
    from singularity.engine import compile_model

    eager = tiny_model_factory("retrieval").eval()
    compiled = tiny_model_factory("retrieval").eval()
    compiled.load_state_dict(eager.state_dict())
    compile_model(compiled, backend="aot_eager")  # traces graphs as inductor does, without its C++ build
    assert set(compiled.state_dict()) == set(eager.state_dict())  # in-place: keys keep their names
    images, text, _ = _batch()
    for a, b in zip(_outputs(eager, images, text), _outputs(compiled, images, text)):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_fused_adamw_equals_foreach(tiny_model_factory):
    from singularity.optim import create_optimizer, use_fused

    config = OmegaConf.create({"optimizer": {"opt": "adamW", "lr": 1e-3, "weight_decay": 0.02}})
    models = [tiny_model_factory("retrieval").train() for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    assert use_fused(models[0], None) is True  # auto: fused for CPU / CUDA parameters
    assert use_fused(models[0].to("meta"), None) is False and use_fused(models[0], False) is False
    models[0] = tiny_model_factory("retrieval").train()
    images, text, idx = _batch()
    for model, fused in zip(models, (False, True)):
        config.optimizer.fused = fused
        opt = create_optimizer(model, config)
        assert all(g.get("fused") is fused for g in opt.param_groups)
        for step in range(3):
            torch.manual_seed(step)
            opt.zero_grad()
            sum(model(images, text, idx).values()).backward()
            opt.step()
    for (name, a), (_, b) in zip(models[0].named_parameters(), models[1].named_parameters()):
        if name.endswith("attention.self.key.bias"):
            # softmax ignores a key bias: its gradient is rounding noise, which Adam scales up to lr-sized steps
            continue
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5, msg=name)


def _naive_rerank(model, sim, k, text_feats, text_atts, image_feats, queries_are_images):
    """The original's loop (spec 5.6 step 4), written out: one query's top-k per ITM forward."""
    out = torch.full(sim.shape, -100.0)
    for q in range(sim.shape[0]):
        top = sim[q].topk(min(k, sim.shape[1])).indices
        if queries_are_images:
            mem = image_feats[q:q + 1, 0].repeat(len(top), 1, 1)
            score = model.itm_logits(text_feats[top], text_atts[top], mem)[:, 1]
        else:
            score = model.itm_logits(text_feats[q:q + 1].repeat(len(top), 1, 1), text_atts[q:q + 1].repeat(len(top), 1),
                                     image_feats[top, 0])[:, 1]
        out[q, top] = score
    return out


@pytest.mark.parametrize("queries_are_images", [True, False], ids=["i2t", "t2i"])
def test_batched_itm_rerank_equals_per_query(tiny_model_factory, queries_are_images):
    import contextlib

    from singularity.evaluation import rerank

    model = tiny_model_factory("retrieval").eval()
    images, text, _ = _batch(5)
    texts = {k: torch.cat([v, v.flip(0), v[:2]]) for k, v in text.items()}  # 12 texts
    with torch.no_grad():
        memory = model.encode_image(images)[0].unsqueeze(1)
        text_feats, _ = model.encode_text(texts)
        sim = torch.randn(5, 12, generator=torch.Generator().manual_seed(2))
        if not queries_are_images:
            sim = sim.t().contiguous()
        expected = _naive_rerank(model, sim, 4, text_feats, texts["attention_mask"], memory, queries_are_images)
        for rows in (0, 7, 64):  # per query (original), chunks cutting across queries, everything at once
            got = rerank(model, sim, range(sim.shape[0]), 4, rows, text_feats, texts["attention_mask"], memory,
                         torch.device("cpu"), "concat", contextlib.nullcontext, queries_are_images=queries_are_images)
            assert torch.equal(got == -100.0, expected == -100.0)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        part = rerank(model, sim, [1, 3], 4, 64, text_feats, texts["attention_mask"], memory, torch.device("cpu"),
                      "concat", contextlib.nullcontext, queries_are_images=queries_are_images)
    assert torch.all(part[[0, 2]] == -100.0)  # rows of other ranks stay at the fill value
    torch.testing.assert_close(part[[1, 3]], expected[[1, 3]], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("task,extra,frames", [
    ("retrieval", {}, 1),
    ("pretrain", {}, 1),
    ("vqa", {}, 1),
    ("retrieval", {"add_temporal_embed": True, "temporal_vision_encoder": {"enable": True, "num_layers": 1}}, 2),
    ("retrieval", {"temporal_vision_encoder": {"enable": True, "num_layers": 1}}, 1),
    ("retrieval", {"add_temporal_embed": True,
                   "temporal_vision_encoder": {"enable": True, "num_layers": 1, "update_pooler_embed": True}}, 2),
], ids=["retrieval", "pretrain", "qa", "temporal-2frames", "temporal-encoder-1frame", "temporal-pooler-update"])
def test_unused_parameters_are_the_declared_ones(tiny_model_factory, task, extra, frames):
    """DDP's find_unused_parameters is on exactly when a parameter gets no gradient in a training step."""
    model = tiny_model_factory(task, video_input={"num_frames": frames}, **extra).train()
    images, text, idx = _batch(4, frames)
    torch.manual_seed(0)
    if task == "vqa":
        answers = {"input_ids": text["input_ids"][:, :4], "attention_mask": text["attention_mask"][:, :4]}
        loss = model(images, text, answers, torch.ones(4), [1, 1, 1, 1])
    else:
        loss = sum(model(images, text, idx).values())
    loss.backward()
    no_grad = {name for name, p in model.named_parameters() if p.grad is None}
    declared = model.unused_parameter_names()
    assert {n for n in no_grad if not any(n == d or n.startswith(d + ".") for d in declared)} == set()
    assert all(any(n == d or n.startswith(d + ".") for n in no_grad) for d in declared)


def test_speed_flags_on_the_task_command_line():
    from singularity.config import load_config, parse_overrides

    assert parse_overrides(["--num_threads", "2", "--report_to=tensorboard", "--compile", "k_test=4"]) == [
        "num_threads=2", "report_to=tensorboard", "compile=True", "k_test=4"]
    config = load_config("ret_msrvtt.yaml", ["--num_threads", "1", "attn_implementation=eager", "itm_batch_size=256",
                                             "optimizer.fused=True", "--compile"], require_env=False)
    assert (config.num_threads, config.attn_implementation, config.itm_batch_size, config.compile) == (1, "eager", 256,
                                                                                                       True)
    assert config.optimizer.fused is True


@pytest.mark.parametrize("tokens,field", [
    (["attn_implementation=flash"], "attn_implementation"),
    (["--num_threads", "0"], "num_threads"),
    (["--report_to", "mlflow"], "report_to"),
    (["itm_batch_size=-1"], "itm_batch_size"),
    (["--num_threads"], None),
], ids=["attn", "threads-zero", "report-to", "itm-rows", "flag-without-value"])
def test_bad_speed_flags_are_one_line_errors(tokens, field):
    from singularity.config import load_config

    with pytest.raises(InputError) as err:
        load_config("ret_msrvtt.yaml", tokens, require_env=False)
    message = str(err.value)
    assert "\n" not in message and (field is None or f"'{field}'" in message or field in message), message
