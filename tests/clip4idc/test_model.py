"""Spec 4: pair-encoder shapes, segment embeddings, EOT pooling, the fixed second-CLS index (9.2),
tied decoder embeddings, losses (4.5/4.6, 9.14) and the skipped text tower in stage 2 (9.15)."""
import math

import torch

from clip4idc.losses import caption_loss, cross_en, symmetric_infonce
from clip4idc.models import build_model, load_clip_config, load_decoder_config


def test_pair_encoder_shapes_and_segments(tiny_caption_model):
    m = tiny_caption_model
    torch.manual_seed(0)
    bef, aft = torch.randn(2, 3, 28, 28), torch.randn(2, 3, 28, 28)
    pooled, hidden = m.encode_pair(bef, aft)
    assert pooled.shape == (2, 64) and hidden.shape == (2, 100, 64)
    swapped, _ = m.encode_pair(aft, bef)
    assert not torch.allclose(pooled, swapped, atol=1e-4)  # before/after segments are distinguished
    same, _ = m.encode_pair(bef, bef)
    m.clip.visual.bef_embedding.data.copy_(m.clip.visual.aft_embedding.data)
    m.clip.visual.joint_positional_embedding.data[50:] = m.clip.visual.joint_positional_embedding.data[:50]
    symmetric, _ = m.encode_pair(bef, bef)
    assert not torch.allclose(same, symmetric)


def test_second_cls_index_follows_grid():
    cfg = load_clip_config("tiny", image_resolution=32, vision_patch_size=8)  # 4x4 grid -> 17 tokens per image
    m = build_model(cfg, None, "retrieval").eval()
    bef, aft = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    pooled, hidden = m.encode_pair(bef, aft)
    assert hidden.shape[1] == 34
    torch.testing.assert_close(pooled, (hidden[:, 0] + hidden[:, 17]) / 2)


def test_text_pooling_picks_eot(tiny_caption_model):
    ids = torch.tensor([[49406, 518, 736, 49407, 0, 0], [49406, 518, 49407, 0, 0, 0]])
    pooled, hidden = tiny_caption_model.encode_text(ids)
    torch.testing.assert_close(pooled[0], hidden[0, 3])
    torch.testing.assert_close(pooled[1], hidden[1, 2])
    # causal mask: tokens after EOT do not change the pooled vector
    ids2 = ids.clone()
    ids2[0, 4] = 1000
    torch.testing.assert_close(tiny_caption_model.encode_text(ids2)[0][0], pooled[0])


def test_decoder_is_causal_and_tied(tiny_caption_model):
    m = tiny_caption_model
    _, hidden = m.encode_pair(torch.randn(1, 3, 28, 28), torch.randn(1, 3, 28, 28))
    mem = m.decoder_memory(hidden)
    a = m.decode_step(mem, torch.tensor([[49406, 518, 736, 11353]]))
    b = m.decode_step(mem, torch.tensor([[49406, 518, 736, 999]]))
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3], b[:, 3])
    assert m.word_weight is m.clip.text.embeddings.token_embedding.weight
    assert not any("word_embeddings" in n for n, _ in m.named_parameters())  # one tensor, used three times


def test_infonce_matches_hand_computation():
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    v = torch.tensor([[1.0, 0.2], [0.1, 1.0], [0.5, 0.4]])
    scale = torch.tensor(math.log(10.0))
    tn, vn = t / t.norm(dim=1, keepdim=True), v / v.norm(dim=1, keepdim=True)
    s = 10.0 * tn @ vn.t()
    rows = [-(s[i, i] - torch.logsumexp(s[i], 0)) for i in range(3)]
    cols = [-(s[i, i] - torch.logsumexp(s[:, i], 0)) for i in range(3)]
    expected = (sum(rows) / 3 + sum(cols) / 3) / 2
    torch.testing.assert_close(symmetric_infonce(t, v, scale), expected)
    torch.testing.assert_close(cross_en(s), sum(rows) / 3)


def test_caption_ce_ignores_pad_id_zero():
    logits = torch.randn(1, 3, 10)
    full = caption_loss(logits, torch.tensor([[4, 0, 0]]))
    torch.testing.assert_close(full, torch.nn.functional.cross_entropy(logits[0, :1], torch.tensor([4])))


def test_stage_two_skips_text_tower(tiny_caption_model):
    calls = []
    tiny_caption_model.clip.text.register_forward_hook(lambda *a: calls.append(1))
    ids = torch.tensor([[49406, 518, 736]])
    loss = tiny_caption_model(torch.randn(1, 3, 28, 28), torch.randn(1, 3, 28, 28), in_ids=ids,
                              dec_mask=torch.ones(1, 3), out_ids=torch.tensor([[518, 736, 49407]]))
    assert torch.isfinite(loss) and calls == []


def test_stacked_distractor_pass_equals_two_passes(tiny_caption_model):
    """CLEVR captioning runs the change and distractor pairs as one stacked batch; the loss must still be
    mean CE(change captions) + mean CE(no-change captions), each averaged over its own tokens."""
    m = tiny_caption_model
    torch.manual_seed(1)
    bef, aft, nsc = torch.randn(3, 3, 28, 28), torch.randn(3, 3, 28, 28), torch.randn(3, 3, 28, 28)
    out = torch.tensor([[518, 736, 4044, 49407], [518, 49407, 0, 0], [736, 518, 518, 49407]])
    no_out = torch.tensor([[1146, 49407, 0, 0], [1146, 3955, 49407, 0], [1146, 49407, 0, 0]])
    in_ids = torch.cat([torch.full((3, 1), 49406), out[:, :-1]], dim=1)
    no_in = torch.cat([torch.full((3, 1), 49406), no_out[:, :-1]], dim=1)
    stacked = m(bef, aft, in_ids=in_ids, dec_mask=(in_ids != 0).long(), out_ids=out, no_aft=nsc, no_in_ids=no_in,
                no_dec_mask=(no_in != 0).long(), no_out_ids=no_out)
    two = (m.caption_loss(bef, aft, in_ids, (in_ids != 0).long(), out)
           + m.caption_loss(bef, nsc, no_in, (no_in != 0).long(), no_out))
    torch.testing.assert_close(stacked, two, rtol=1e-5, atol=1e-5)
    pooled = m.caption_loss(torch.cat([bef, bef]), torch.cat([aft, nsc]), torch.cat([in_ids, no_in]),
                            torch.cat([(in_ids != 0).long(), (no_in != 0).long()]), torch.cat([out, no_out]))
    assert not torch.allclose(stacked, 2 * pooled)  # not one mean over the pooled tokens (unequal counts)


def test_caption_model_requires_matching_sizes():
    import pytest

    with pytest.raises(ValueError, match="max_target_embeddings"):
        build_model(load_clip_config("tiny"), load_decoder_config("decoder-base").__class__(
            hidden_size=64, intermediate_size=128, num_attention_heads=2, num_decoder_layers=1,
            max_target_embeddings=77), "caption")
