"""Model: key layout, reference forward through the converter, visual overwrite, loss masking (asserts 5, 6)."""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from visualcomet import data as vdata
from visualcomet.convert import convert_state_dict, parse_key_file
from visualcomet.model import VisualCometLMHead, make_config, sequence_scores

KEYS = Path(__file__).resolve().parents[1] / "fixtures" / "visualcomet_state_dict_keys.txt"
TINY = {"vocab": 120, "n_embd": 64, "n_head": 2, "n_layer": 2, "n_pos": 64, "feat": 32}


def tiny_config(**kw):
    args = dict(vocab_size=TINY["vocab"], n_layer=TINY["n_layer"], n_head=TINY["n_head"], n_embd=TINY["n_embd"],
                n_positions=TINY["n_pos"], feature_dim=TINY["feat"])
    return make_config(**{**args, **kw})


def tiny_original_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Original-layout (2.4.1) state dict at tiny dims, built from the real key file's names and shape pattern."""
    real = parse_key_file(KEYS)[0]
    dims = {768: TINY["n_embd"], 2304: 3 * TINY["n_embd"], 3072: 4 * TINY["n_embd"], 50317: TINY["vocab"],
            1024: TINY["n_pos"], 2048: TINY["feat"]}
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in real.items():
        m = re.match(r"transformer\.h\.(\d+)\.", key)
        if m and int(m.group(1)) >= TINY["n_layer"]:
            continue
        shape = tuple(dims.get(s, s) for s in shape)
        if key.endswith("attn.bias") and len(shape) == 4:
            sd[key] = torch.tril(torch.ones(shape[2], shape[3])).view(shape)
        elif "ln" in key.split(".")[-2]:
            sd[key] = (1.0 if key.endswith("weight") else 0.0) + 0.1 * torch.randn(shape, generator=g)
        else:
            sd[key] = 0.1 * torch.randn(shape, generator=g)
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    return sd


def reference_forward(sd, ids, img_feats, boxes_mask, person_ids, subject_ids):
    """GPT-2 as in transformers 2.4.1 plus the SimpleDetector path, written from the spec (no transformers code)."""
    def ln(x, p, eps=1e-5):
        return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps)

    wte, wpe = sd["transformer.wte.weight"], sd["transformer.wpe.weight"]
    emb = wte[ids].clone()
    B, L = ids.shape
    nb = int(boxes_mask.sum(1).max())
    for b in range(B):
        slots = torch.zeros(nb, wte.shape[1])
        for j in range(int(boxes_mask[b].sum())):
            x = img_feats[b, j] @ sd["transformer.detector.obj_downsample.1.weight"].T + \
                sd["transformer.detector.obj_downsample.1.bias"]
            v = ln(torch.relu(x), "transformer.detector.ln_f", eps=1e-12)
            slots[j] = v + wte[person_ids[b, j]] + sd["transformer.subject_embed.weight"][subject_ids[b, j]]
        emb[b, 1:1 + nb] = slots
    h = emb + wpe[:L]
    H = TINY["n_head"]
    d = wte.shape[1] // H
    for i in range(TINY["n_layer"]):
        p = f"transformer.h.{i}."
        a = ln(h, p + "ln_1") @ sd[p + "attn.c_attn.weight"] + sd[p + "attn.c_attn.bias"]
        q, k, v = (t.view(B, L, H, d).transpose(1, 2) for t in a.split(wte.shape[1], dim=2))
        w = q @ k.transpose(-1, -2) / math.sqrt(d)
        mask = sd[p + "attn.bias"][:, :, :L, :L]
        w = torch.softmax(w * mask - 1e4 * (1 - mask), dim=-1)
        o = (w @ v).transpose(1, 2).reshape(B, L, -1)
        h = h + o @ sd[p + "attn.c_proj.weight"] + sd[p + "attn.c_proj.bias"]
        m = ln(h, p + "ln_2") @ sd[p + "mlp.c_fc.weight"] + sd[p + "mlp.c_fc.bias"]
        m = 0.5 * m * (1 + torch.tanh(math.sqrt(2 / math.pi) * (m + 0.044715 * m ** 3)))
        h = h + m @ sd[p + "mlp.c_proj.weight"] + sd[p + "mlp.c_proj.bias"]
    return ln(h, "transformer.ln_f") @ wte.T


def visual_batch(B=2, L=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, TINY["vocab"], (B, L), generator=g)
    feats = torch.randn(B, 15, TINY["feat"], generator=g)
    mask = torch.zeros(B, 15, dtype=torch.long)
    mask[0, :4] = 1
    mask[1, :2] = 1
    pids = torch.randint(0, TINY["vocab"], (B, 15), generator=g) * mask
    return ids, feats, mask, pids, torch.zeros(B, 15, dtype=torch.long)


def test_tiny_key_names_and_shapes_match_the_key_file():
    real = parse_key_file(KEYS)[0]
    model = VisualCometLMHead(tiny_config())
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    original = {k: tuple(v.shape) for k, v in tiny_original_state_dict().items()}
    # same names apart from the causal-mask buffers 5.x dropped; same shapes at tiny dims
    assert set(original) - set(ours) == {f"transformer.h.{i}.attn.bias" for i in range(TINY["n_layer"])}
    assert set(ours) <= set(original)
    assert all(original[k] == ours[k] for k in ours)
    assert {re.sub(r"\.h\.\d+\.", ".h.N.", k) for k in real} == {re.sub(r"\.h\.\d+\.", ".h.N.", k) for k in original}


def test_converted_original_state_dict_matches_reference_forward():
    torch.manual_seed(0)
    sd = tiny_original_state_dict()
    model = VisualCometLMHead(tiny_config())
    from common.checkpoint import load_state_dict_strict

    report = load_state_dict_strict(model, convert_state_dict(sd))
    assert report.ok and report.loaded == report.total
    model.eval()
    batch = visual_batch()
    with torch.no_grad():
        ours = model(batch[0], img_feats=batch[1], boxes_mask=batch[2], person_ids=batch[3],
                     subject_ids=batch[4])["logits"]
    ref = reference_forward(sd, *batch)
    assert torch.allclose(ours, ref, atol=1e-4), (ours - ref).abs().max()
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def test_visual_overwrite_touches_only_image_slot_positions():
    model = VisualCometLMHead(tiny_config()).eval()
    ids, feats, mask, pids, sids = visual_batch()
    emb_plain = model.transformer.wte(ids)
    emb = model.embed(ids, feats, mask, pids, sids)
    nb = int(mask.sum(1).max())
    changed = (emb != emb_plain).any(-1)
    assert not changed[:, 0].any() and not changed[:, 1 + nb:].any()
    assert changed[0, 1:1 + nb].all()
    # example 1 has 2 boxes, the batch max is 4: slots 3..4 are zero-filled (pitfall 5, original behaviour)
    assert torch.all(emb[1, 3:1 + nb] == 0)
    model.zero_fill_visual_slots = False  # the O variant keeps the token embeddings there
    emb_keep = model.embed(ids, feats, mask, pids, sids)
    assert torch.equal(emb_keep[1, 3:1 + nb], emb_plain[1, 3:1 + nb])
    # person ids / subject ids switches
    no_pid = VisualCometLMHead(tiny_config(use_person_ids=False, use_subject_ids=False))
    assert not hasattr(no_pid.transformer, "subject_embed")


def test_loss_masking_and_rank_denominator(vc_tokenizer):
    torch.manual_seed(0)
    model = VisualCometLMHead(tiny_config(vocab_size=len(vc_tokenizer))).eval()
    rec = {"event_name": "<|det1|> is here", "place": "in a room", "inference_relation": "intent",
           "inference_text_name": "feed the family"}
    lay = vdata.Layout(8, 6, 8, 48)
    ids, labels = vdata.encode_record(rec, vc_tokenizer, lay)
    ids_t, lab_t = torch.tensor([ids]), torch.tensor([labels])
    with torch.no_grad():
        out = model(ids_t, labels=lab_t)
    logits = out["logits"]
    n_lab = sum(v != vdata.IGNORE_INDEX for v in labels)
    ce = F.cross_entropy(logits[0, :-1], lab_t[0, 1:], ignore_index=-100, reduction="sum")
    assert torch.allclose(out["loss"], ce / n_lab)
    # tokens after the labelled span (pads) cannot change the loss (causal, ignored labels)
    end = max(i for i, v in enumerate(labels) if v != vdata.IGNORE_INDEX)
    ids2 = ids_t.clone()
    ids2[0, end + 1:] = 5
    with torch.no_grad():
        assert torch.allclose(model(ids2, labels=lab_t)["loss"], out["loss"], atol=1e-6)
    # rank score divides by #labelled + 1 (pitfall 11, K) or #labelled (O)
    assert torch.allclose(sequence_scores(logits, lab_t), torch.exp(ce / (n_lab + 1)))
    assert torch.allclose(sequence_scores(logits, lab_t, original_denominator=False), torch.exp(ce / n_lab))


def test_kv_cache_forward_equals_full_forward():
    model = VisualCometLMHead(tiny_config()).eval()
    ids, feats, mask, pids, sids = visual_batch(L=20)
    with torch.no_grad():
        full = model(ids, img_feats=feats, boxes_mask=mask, person_ids=pids, subject_ids=sids)["logits"]
        first = model(ids[:, :17], img_feats=feats, boxes_mask=mask, person_ids=pids, subject_ids=sids, use_cache=True)
        past = first["past_key_values"]
        steps = []
        for t in range(17, 20):
            o = model(ids[:, t:t + 1], past_key_values=past, use_cache=True, position_offset=t)
            past = o["past_key_values"]
            steps.append(o["logits"])
    assert torch.allclose(torch.cat(steps, 1), full[:, 17:], atol=1e-5)


def test_pads_are_attended_no_attention_mask(vc_tokenizer):
    """Pitfall 4 (K): no attention mask; padding inside the event segment changes the inference logits."""
    torch.manual_seed(0)
    model = VisualCometLMHead(tiny_config(vocab_size=len(vc_tokenizer))).eval()
    rec = {"event_name": "<|det1|> is here", "place": "in a room", "inference_relation": "intent",
           "inference_text_name": "feed the family"}
    lay = vdata.Layout(12, 6, 8, 48)
    ids, _ = vdata.encode_record(rec, vc_tokenizer, lay)
    pad_pos = lay.place_start - 1
    assert ids[pad_pos] == vc_tokenizer.eot_id
    other = list(ids)
    other[pad_pos] = 5
    with torch.no_grad():
        a = model(torch.tensor([ids]))["logits"][0, lay.inference_start:]
        b = model(torch.tensor([other]))["logits"][0, lay.inference_start:]
    assert not torch.allclose(a, b)
