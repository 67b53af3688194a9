"""Spec 4.7 / 9.13: greedy decoding with early stop equals the original's full-length run; beam search."""
import torch
import torch.nn.functional as F

from clip4idc.decoding import beam_decode, decode_captions, greedy_decode, ids_to_captions
from clip4idc.tokenizer import EOT_ID, SOT_ID


def _full_length_greedy(model, bef, aft, steps):
    _, hidden = model.encode_pair(bef, aft)
    mem = model.decoder_memory(hidden)
    ids = torch.full((bef.shape[0], 1), SOT_ID)
    for _ in range(steps):
        ids = torch.cat([ids, model.decode_step(mem, ids)[:, -1].argmax(-1, keepdim=True)], 1)
    return ids[:, 1:]


def _seq_logprob(model, bef, aft, ids):
    _, hidden = model.encode_pair(bef, aft)
    mem = model.decoder_memory(hidden)
    seq = torch.cat([torch.full((ids.shape[0], 1), SOT_ID), ids], 1)
    logp = F.log_softmax(model.decode_step(mem, seq[:, :-1]), -1)
    out = []
    for b in range(ids.shape[0]):
        total = 0.0
        for t in range(ids.shape[1]):
            total += logp[b, t, ids[b, t]].item()
            if ids[b, t] == EOT_ID:
                break
        out.append(total)
    return out


def test_greedy_early_stop_matches_full_length(tiny_caption_model, tokenizer):
    m = tiny_caption_model
    with torch.no_grad():  # make EOT likely after 3 tokens so early stopping triggers
        m.decoder.head_bias[EOT_ID] = 8.0
        torch.manual_seed(0)
        bef, aft = torch.randn(3, 3, 28, 28), torch.randn(3, 3, 28, 28)
        fast = greedy_decode(m, bef, aft, 10)
        full = _full_length_greedy(m, bef, aft, 10)
    assert fast.shape[1] < full.shape[1]
    assert ids_to_captions(tokenizer, fast) == ids_to_captions(tokenizer, full)
    assert decode_captions(m, tokenizer, bef, aft, 10, beam_size=1) == ids_to_captions(tokenizer, full)


def test_beam_search_scores_at_least_greedy(tiny_caption_model, tokenizer):
    m = tiny_caption_model
    with torch.no_grad():
        m.decoder.head_bias[EOT_ID] = 4.0
        torch.manual_seed(1)
        bef, aft = torch.randn(2, 3, 28, 28), torch.randn(2, 3, 28, 28)
        greedy = greedy_decode(m, bef, aft, 6)
        beam = beam_decode(m, bef, aft, 6, beam_size=4)
        g_lp, b_lp = _seq_logprob(m, bef, aft, greedy), _seq_logprob(m, bef, aft, beam)
        assert torch.equal(beam_decode(m, bef, aft, 6, beam_size=1), greedy)
    for g, b in zip(g_lp, b_lp):
        assert b >= g - 1e-4
    assert len(decode_captions(m, tokenizer, bef, aft, 6, beam_size=3)) == 2
