"""Spec 4.7 / 9.13: greedy decoding with early stop equals the original's full-length run; beam search."""
import math
from functools import partial

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


class _TableDecoder:
    """A hand-written decoder over the tokens SOT, 'a' (1), 'b' (2) and EOT: next-token probabilities
    depend on the last token only. From SOT: EOT 0.55, a 0.45; after a: b 0.6, EOT 0.4; after b: EOT 1."""

    VOCAB = EOT_ID + 1
    TABLE = {SOT_ID: {EOT_ID: 0.55, 1: 0.45}, 1: {2: 0.6, EOT_ID: 0.4}, 2: {EOT_ID: 1.0}, EOT_ID: {EOT_ID: 1.0}}

    def encode_pair(self, bef, aft):
        return None, torch.zeros(bef.shape[0], 1, 1)

    def decoder_memory(self, hidden):
        return [hidden]

    def decode_step(self, memory, seqs):
        logits = torch.full((seqs.shape[0], seqs.shape[1], self.VOCAB), -1e4)
        for row, last in enumerate(seqs[:, -1].tolist()):
            for tok, p in self.TABLE.get(last, {EOT_ID: 1.0}).items():
                logits[row, -1, tok] = torch.log(torch.tensor(p))
        return logits


def test_beam_length_penalty_hand_computed():
    """Raw summed log-probs prefer the empty caption: log 0.55 = -0.598 > log(0.45 * 0.6 * 1) = -1.309.
    With alpha = 1 the scores are divided by the generated length including EOT: -0.598 / 1 vs
    -1.309 / 3 = -0.436, so 'a b' wins; alpha = 0.5: -0.598 vs -1.309 / sqrt(3) = -0.756, still EOT."""
    model, x = _TableDecoder(), torch.zeros(1, 3, 2, 2)
    eot_only, a_b = [EOT_ID], [1, 2, EOT_ID]
    beam = partial(beam_decode, use_cache=False)  # the table decoder has no KV cache: prefix re-run
    assert beam(model, x, x, 5, beam_size=2)[0].tolist()[:1] == eot_only  # today's rule: shortest wins
    assert beam(model, x, x, 5, beam_size=2, length_penalty=1.0)[0].tolist()[:3] == a_b
    assert beam(model, x, x, 5, beam_size=2, length_penalty=0.5)[0].tolist()[:1] == eot_only
    assert abs(math.log(0.55) - (-0.5978)) < 1e-4 and abs(math.log(0.45 * 0.6) / 3 - (-0.4364)) < 1e-4
    assert abs(math.log(0.45 * 0.6) / math.sqrt(3) - (-0.7559)) < 1e-4
    # finished beams are padded, never extended: the padded tail after EOT decodes to nothing
    out = beam(model, x, x, 5, beam_size=2, length_penalty=1.0)[0].tolist()
    assert all(t == 0 for t in out[3:])
