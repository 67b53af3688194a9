"""convert.py: the key file at the original default config (both sections, CLI), layout round trips,
fp16 original tensors, and forward parity of a converted tiny original-layout state dict against an
independent implementation of the original's forward written on the original key names."""
import math
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from clip4idc.convert import check_keys, default_model, load_into, new_to_original, original_to_new, read_key_file
from clip4idc.models import build_model, load_clip_config, load_decoder_config

FP16_SUFFIXES = ("attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
                 "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias", "conv1.weight")


def test_meta_model_reproduces_key_file(fixtures_dir):
    sections = read_key_file(fixtures_dir / "clip4idc_state_dict_keys.txt")
    assert len(sections["retrieval"]) == 307 and len(sections["caption"]) == 443
    for stage, entries in sections.items():
        exported = new_to_original(default_model(stage).state_dict())
        assert [(k, tuple(v.shape)) for k, v in exported.items()] != []
        assert {k: tuple(v.shape) for k, v in exported.items()} == dict(entries)
    model = default_model("caption")
    assert sum(p.numel() for p in model.parameters()) == 173_740_545  # spec 4.1 (unique parameters)
    assert sum(p.numel() for p in default_model("retrieval").parameters()) == 151_357_185


def test_check_keys_cli_every_section(fixtures_dir, repo_root):
    proc = subprocess.run([sys.executable, "-m", "clip4idc.convert", "--check-keys",
                           str(fixtures_dir / "clip4idc_state_dict_keys.txt")],
                          capture_output=True, text=True, cwd=repo_root)
    assert proc.returncode == 0, proc.stderr
    assert "retrieval: loaded 307/307 keys" in proc.stdout and "caption: loaded 443/443 keys" in proc.stdout


def test_check_keys_fails_on_bad_file(tmp_path, fixtures_dir):
    lines = (fixtures_dir / "clip4idc_state_dict_keys.txt").read_text().splitlines()
    bad = [l.replace("[100, 768]", "[101, 768]") for l in lines if not l.startswith("decoder.embeddings.LayerNorm.bias")]
    (tmp_path / "keys.txt").write_text("\n".join(bad) + "\n")
    assert check_keys(tmp_path / "keys.txt") is False


def _original_tiny_state_dict(seed=0):
    torch.manual_seed(seed)
    shapes = new_to_original(build_model(load_clip_config("tiny"), load_decoder_config("decoder-tiny"),
                                         "caption").state_dict())
    sd = OrderedDict()
    for name, ref in shapes.items():
        if name in ("decoder.embeddings.word_embeddings.weight", "decoder.classifier.cls.predictions.decoder.weight"):
            sd[name] = sd["clip.token_embedding.weight"]
            continue
        if name == "decoder.embeddings.position_embeddings.weight":
            sd[name] = sd["clip.positional_embedding"]
            continue
        t = torch.randn(ref.shape) * (0.2 if ref.dim() > 1 else 0.05)
        if name.endswith("LayerNorm.weight") or ".ln_" in name and name.endswith("weight"):
            t = 1 + t
        if name == "clip.logit_scale":
            t = torch.tensor(math.log(100.0))
        if name.startswith("clip.") and (name.endswith(FP16_SUFFIXES) or name in ("clip.text_projection", "clip.visual.proj")):
            t = t.half()  # the original saves these in fp16 (spec 5.6)
        sd[name] = t
    return sd


# --- an independent forward on the ORIGINAL key names ---------------------------------------------
def _res_block(x, sd, p, heads, mask=None):
    w = x.shape[-1]
    h = F.layer_norm(x, (w,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], 1e-5)
    q, k, v = F.linear(h, sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"]).chunk(3, dim=-1)
    b, n, _ = q.shape
    q, k, v = (t.view(b, n, heads, w // heads).transpose(1, 2) for t in (q, k, v))
    s = q @ k.transpose(-1, -2) / math.sqrt(w // heads)
    if mask is not None:
        s = s + mask
    a = (s.softmax(-1) @ v).transpose(1, 2).reshape(b, n, w)
    x = x + F.linear(a, sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"])
    h = F.layer_norm(x, (w,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], 1e-5)
    h = F.linear(h, sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"])
    h = h * torch.sigmoid(1.702 * h)
    return x + F.linear(h, sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])


def _ref_visual(sd, bef, aft, cfg):
    w = cfg.vision_width
    x = torch.stack([bef, aft], 1).flatten(0, 1)
    x = F.conv2d(x, sd["clip.visual.conv1.weight"], stride=cfg.vision_patch_size).flatten(2).transpose(1, 2)
    x = torch.cat([sd["clip.visual.class_embedding"].expand(x.shape[0], 1, w), x], 1) + sd["clip.visual.positional_embedding"]
    x = F.layer_norm(x, (w,), sd["clip.visual.ln_pre.weight"], sd["clip.visual.ln_pre.bias"], 1e-5)
    heads = w // 64
    for i in range(cfg.intra_layers):
        x = _res_block(x, sd, f"clip.visual.transformer.resblocks.{i}.", heads)
    t = cfg.tokens_per_image
    x = x.view(bef.shape[0], 2, t, w)
    x = torch.cat([x[:, 0] + sd["clip.visual.bef_embedding"], x[:, 1] + sd["clip.visual.aft_embedding"]], 1)
    x = F.layer_norm(x + sd["clip.visual.joint_positional_embedding"], (w,), sd["clip.visual.ln_mid.weight"],
                     sd["clip.visual.ln_mid.bias"], 1e-5)
    for i in range(cfg.intra_layers, cfg.vision_layers):
        x = _res_block(x, sd, f"clip.visual.transformer.resblocks.{i}.", heads)
    x = F.layer_norm(x, (w,), sd["clip.visual.ln_post.weight"], sd["clip.visual.ln_post.bias"], 1e-5)
    hidden = x @ sd["clip.visual.proj"]
    return (hidden[:, 0] + hidden[:, t]) / 2, hidden


def _ref_text(sd, ids, cfg):
    length = ids.shape[1]
    x = sd["clip.token_embedding.weight"][ids] + sd["clip.positional_embedding"][:length]
    mask = torch.full((length, length), float("-inf")).triu(1)
    for i in range(cfg.transformer_layers):
        x = _res_block(x, sd, f"clip.transformer.resblocks.{i}.", cfg.transformer_heads, mask)
    x = F.layer_norm(x, (x.shape[-1],), sd["clip.ln_final.weight"], sd["clip.ln_final.bias"], 1e-5)
    hidden = x @ sd["clip.text_projection"]
    return hidden[torch.arange(ids.shape[0]), ids.argmax(-1)], hidden


def _bert_attn(x, mem, sd, p, heads, mask):
    h = x.shape[-1]
    q = F.linear(x, sd[p + "att.query.weight"], sd[p + "att.query.bias"])
    k = F.linear(mem, sd[p + "att.key.weight"], sd[p + "att.key.bias"])
    v = F.linear(mem, sd[p + "att.value.weight"], sd[p + "att.value.bias"])
    b, n, m = x.shape[0], x.shape[1], mem.shape[1]
    q, k, v = q.view(b, n, heads, -1).transpose(1, 2), k.view(b, m, heads, -1).transpose(1, 2), v.view(b, m, heads, -1).transpose(1, 2)
    s = q @ k.transpose(-1, -2) / math.sqrt(h // heads) + mask
    ctx = (s.softmax(-1) @ v).transpose(1, 2).reshape(b, n, h)
    out = F.linear(ctx, sd[p + "output.dense.weight"], sd[p + "output.dense.bias"])
    return F.layer_norm(out + x, (h,), sd[p + "output.LayerNorm.weight"], sd[p + "output.LayerNorm.bias"], 1e-12)


def _ffn(x, sd, p):
    h = F.gelu(F.linear(x, sd[p + "intermediate.dense.weight"], sd[p + "intermediate.dense.bias"]))
    h = F.linear(h, sd[p + "output.dense.weight"], sd[p + "output.dense.bias"])
    return F.layer_norm(h + x, (x.shape[-1],), sd[p + "output.LayerNorm.weight"], sd[p + "output.LayerNorm.bias"], 1e-12)


def _ref_decoder(sd, vis_hidden, ids, dcfg):
    heads, n = dcfg.num_attention_heads, ids.shape[1]
    zero = torch.zeros(1, 1, 1, vis_hidden.shape[1])
    enc, encs = vis_hidden, []
    for i in range(dcfg.num_decoder_layers):
        p = f"decoder.encoder.layer.{i}."
        enc = _ffn(_bert_attn(enc, enc, sd, p + "slf_attn.", heads, zero), sd, p)
        encs.append(enc)
    x = sd["decoder.embeddings.word_embeddings.weight"][ids] + sd["decoder.embeddings.position_embeddings.weight"][:n]
    x = F.layer_norm(x, (x.shape[-1],), sd["decoder.embeddings.LayerNorm.weight"], sd["decoder.embeddings.LayerNorm.bias"], 1e-12)
    causal = (1.0 - torch.ones(n, n).tril()) * -10000.0
    for i in range(dcfg.num_decoder_layers):
        p = f"decoder.decoder.layer.{i}."
        x = _bert_attn(x, x, sd, p + "slf_attn.", heads, causal)
        x = _bert_attn(x, encs[i], sd, p + "enc_attn.", heads, zero)
        x = _ffn(x, sd, p)
    p = "decoder.classifier.cls.predictions."
    x = F.gelu(F.linear(x, sd[p + "transform.dense.weight"], sd[p + "transform.dense.bias"]))
    x = F.layer_norm(x, (x.shape[-1],), sd[p + "transform.LayerNorm.weight"], sd[p + "transform.LayerNorm.bias"], 1e-12)
    return x @ sd[p + "decoder.weight"].t() + sd[p + "bias"]


def test_converted_tiny_original_state_dict_gives_same_outputs():
    cfg, dcfg = load_clip_config("tiny"), load_decoder_config("decoder-tiny")
    original = _original_tiny_state_dict()
    model = build_model(cfg, dcfg, "caption").eval()
    report = load_into(model, original, strict=True)
    assert report.ok and report.loaded == report.total
    ref = {k: v.float() for k, v in original.items()}
    torch.manual_seed(1)
    bef, aft = torch.randn(3, 3, 28, 28), torch.randn(3, 3, 28, 28)
    ids = torch.tensor([[49406, 518, 736, 49407, 0, 0], [49406, 518, 49407, 0, 0, 0], [49406, 1, 2, 3, 4, 49407]])
    with torch.no_grad():
        pooled, hidden = model.encode_pair(bef, aft)
        r_pooled, r_hidden = _ref_visual(ref, bef, aft, cfg)
        torch.testing.assert_close(hidden, r_hidden, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(pooled, r_pooled, atol=1e-4, rtol=1e-4)
        t_pooled, t_hidden = model.encode_text(ids)
        rt_pooled, rt_hidden = _ref_text(ref, ids, cfg)
        torch.testing.assert_close(t_hidden, rt_hidden, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(t_pooled, rt_pooled, atol=1e-4, rtol=1e-4)
        dec_in = torch.tensor([[49406, 518, 736, 11353], [49406, 1746, 2, 3], [49406, 5, 6, 7]])
        logits = model.decode_step(model.decoder_memory(hidden), dec_in)
        torch.testing.assert_close(logits, _ref_decoder(ref, r_hidden, dec_in, dcfg), atol=2e-4, rtol=1e-4)


def test_round_trip_and_ties():
    original = _original_tiny_state_dict()
    new = original_to_new(original)
    back = new_to_original(new)
    assert list(sorted(back)) == list(sorted(original))
    for k in original:
        torch.testing.assert_close(back[k].float(), original[k].float())
    # tied names are re-created as the same tensor (spec 6)
    assert back["decoder.embeddings.word_embeddings.weight"] is back["clip.token_embedding.weight"]
    assert back["decoder.classifier.cls.predictions.decoder.weight"] is back["clip.token_embedding.weight"]
    broken = dict(original)
    broken["decoder.embeddings.word_embeddings.weight"] = original["clip.token_embedding.weight"] + 1
    with pytest.raises(ValueError, match="tied"):
        original_to_new(broken)


def test_openai_layout_without_prefix_loads_clip_part():
    original = _original_tiny_state_dict()
    openai = {k[len("clip."):]: v for k, v in original.items() if k.startswith("clip.")
              and not any(s in k for s in ("bef_embedding", "aft_embedding", "joint_positional", "ln_mid"))}
    openai.update({"input_resolution": torch.tensor(28), "context_length": torch.tensor(32), "vocab_size": torch.tensor(49408)})
    model = build_model(load_clip_config("tiny"), None, "retrieval")
    report = load_into(model, openai, strict=False)
    assert not report.unexpected and not report.mismatched
    assert sorted(report.missing) == ["clip.visual.aft_embedding", "clip.visual.bef_embedding",
                                      "clip.visual.joint_positional_embedding", "clip.visual.ln_mid.bias",
                                      "clip.visual.ln_mid.weight"]
