"""Caption decoding: greedy (the original's) and beam search (spec 4.7)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from clip4idc.tokenizer import EOT_ID, PAD_ID, SOT_ID, ClipTokenizer, postprocess_caption


@torch.no_grad()
def greedy_decode(model, bef: torch.Tensor, aft: torch.Tensor, max_words: int) -> torch.Tensor:
    """Generated ids (B, <=max_words) without SOT. Stops once every row emitted EOT: the decoded
    strings equal the original's full-length run because post-processing cuts at EOT (spec 9.13)."""
    _, hidden = model.encode_pair(bef, aft)
    memory = model.decoder_memory(hidden)
    ids = torch.full((bef.shape[0], 1), SOT_ID, dtype=torch.long, device=bef.device)
    done = torch.zeros(bef.shape[0], dtype=torch.bool, device=bef.device)
    for _ in range(max_words):
        nxt = model.decode_step(memory, ids)[:, -1].argmax(dim=-1)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        done |= nxt == EOT_ID
        if bool(done.all()):
            break
    return ids[:, 1:]


@torch.no_grad()
def beam_decode(model, bef: torch.Tensor, aft: torch.Tensor, max_words: int, beam_size: int = 3,
                length_penalty: float = 0.0) -> torch.Tensor:
    """Best beam's ids (B, <=max_words) [new: the original hard-codes beam size 1]. Beams are ranked by
    summed log-probs, top-k over beam x vocab; finished beams stay frozen (extended with padding).

    length_penalty 0: stop when the top beam of every sample has emitted EOT and return it (OpenNMT's
    rule; favours short captions). alpha != 0: run until every beam finished (or max_words) and return
    the beam maximising summed log-prob / length**alpha, length = generated tokens including EOT."""
    if beam_size <= 1:
        return greedy_decode(model, bef, aft, max_words)
    batch, k = bef.shape[0], beam_size
    _, hidden = model.encode_pair(bef, aft)
    memory = [m.repeat_interleave(k, dim=0) for m in model.decoder_memory(hidden)]
    seqs = torch.full((batch * k, 1), SOT_ID, dtype=torch.long, device=bef.device)
    scores = torch.full((batch, k), float("-inf"), device=bef.device)
    scores[:, 0] = 0.0
    finished = torch.zeros(batch * k, dtype=torch.bool, device=bef.device)
    lengths = torch.zeros(batch * k, device=bef.device)
    offsets = (torch.arange(batch, device=bef.device) * k)[:, None]
    for _ in range(max_words):
        logp = F.log_softmax(model.decode_step(memory, seqs)[:, -1].float(), dim=-1)
        vocab = logp.shape[-1]
        logp[finished] = float("-inf")
        logp[finished, PAD_ID] = 0.0
        cand = (scores.view(-1, 1) + logp).view(batch, k * vocab)
        scores, idx = cand.topk(k, dim=-1)
        src = (offsets + torch.div(idx, vocab, rounding_mode="floor")).view(-1)
        tok = (idx % vocab).view(-1)
        seqs = torch.cat([seqs[src], tok[:, None]], dim=1)
        was_finished = finished[src]
        lengths = lengths[src] + (~was_finished).float()
        finished = was_finished | (tok == EOT_ID)
        done = finished.view(batch, k)[:, 0] if length_penalty == 0 else finished.view(batch, k)
        if bool(done.all()):
            break
    if length_penalty == 0:
        best = torch.zeros(batch, dtype=torch.long, device=bef.device)
    else:
        best = (scores / lengths.view(batch, k).clamp(min=1) ** length_penalty).argmax(dim=-1)
    return seqs.view(batch, k, -1)[torch.arange(batch, device=bef.device), best, 1:]


def ids_to_captions(tokenizer: ClipTokenizer, ids: torch.Tensor) -> list[str]:
    """Decoded captions with the original's cleanup (cut at EOT, then at '!', strip)."""
    return [postprocess_caption(tokenizer.decode(row.tolist())) for row in ids]


def decode_captions(model, tokenizer: ClipTokenizer, bef, aft, max_words: int, beam_size: int = 1,
                    length_penalty: float = 0.0) -> list[str]:
    """Captions for a batch of pairs (greedy when beam_size == 1)."""
    ids = (beam_decode(model, bef, aft, max_words, beam_size, length_penalty) if beam_size > 1
           else greedy_decode(model, bef, aft, max_words))
    return ids_to_captions(tokenizer, ids)
