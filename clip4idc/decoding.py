"""Caption decoding: greedy (the original's) and beam search (spec 4.7), both KV-cached.

Every step feeds one token per row: the decoder's self-attention keys/values of the earlier positions and the
cross-attention keys/values of the visual memory are kept (issue 15), instead of re-running the decoder over
the whole prefix as the original does. Beam search runs all samples x beams as one batch: candidate selection
is one top-k over beam x vocabulary per sample and the cache is reordered with one gather per step.
`use_cache=False` re-runs the decoder over the prefix every step (the original's arithmetic; same tokens).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from clip4idc.tokenizer import EOT_ID, PAD_ID, SOT_ID, ClipTokenizer, postprocess_caption


class _Prefix:
    """Next-token logits of growing prefixes, with or without the KV cache; `reorder` follows beam moves."""

    def __init__(self, model, memory: list[torch.Tensor], use_cache: bool, repeat: int = 1):
        self.model, self.use_cache = model, use_cache
        if use_cache:  # keys/values of the visual memory, computed once and shared by the beams of a sample
            self.memory = [tuple(t.repeat_interleave(repeat, dim=0) for t in kv) for kv in model.decode_start(memory)]
        else:
            self.memory = [m.repeat_interleave(repeat, dim=0) for m in memory]
        self.self_kv = None

    def logits(self, seqs: torch.Tensor) -> torch.Tensor:
        """(N,V) logits of the token after each row of `seqs` (N,L), SOT first."""
        if not self.use_cache:
            return self.model.decode_step(self.memory, seqs)[:, -1]
        logits, self.self_kv = self.model.decode_next(self.memory, self.self_kv, seqs[:, -1], seqs.shape[1] - 1)
        return logits

    def reorder(self, src: torch.Tensor) -> None:
        """Rows of the cache follow the beams they extend (`src` indexes the previous rows)."""
        if self.self_kv is not None:
            self.self_kv = [(k[src], v[src]) for k, v in self.self_kv]


@torch.no_grad()
def greedy_decode(model, bef: torch.Tensor, aft: torch.Tensor, max_words: int, use_cache: bool = True) -> torch.Tensor:
    """Generated ids (B, <=max_words) without SOT. Stops once every row emitted EOT: the decoded
    strings equal the original's full-length run because post-processing cuts at EOT (spec 9.13)."""
    _, hidden = model.encode_pair(bef, aft)
    prefix = _Prefix(model, model.decoder_memory(hidden), use_cache)
    ids = torch.full((bef.shape[0], 1), SOT_ID, dtype=torch.long, device=bef.device)
    done = torch.zeros(bef.shape[0], dtype=torch.bool, device=bef.device)
    for _ in range(max_words):
        nxt = prefix.logits(ids).argmax(dim=-1)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        done |= nxt == EOT_ID
        if bool(done.all()):
            break
    return ids[:, 1:]


@torch.no_grad()
def beam_decode(model, bef: torch.Tensor, aft: torch.Tensor, max_words: int, beam_size: int = 3,
                length_penalty: float = 0.0, use_cache: bool = True) -> torch.Tensor:
    """Best beam's ids (B, <=max_words) [new: the original hard-codes beam size 1]. Beams are ranked by
    summed log-probs, top-k over beam x vocab; finished beams stay frozen (extended with padding).

    length_penalty 0: stop when the top beam of every sample has emitted EOT and return it (OpenNMT's
    rule; favours short captions). alpha != 0: run until every beam finished (or max_words) and return
    the beam maximising summed log-prob / length**alpha, length = generated tokens including EOT."""
    if beam_size <= 1:
        return greedy_decode(model, bef, aft, max_words, use_cache)
    batch, k = bef.shape[0], beam_size
    _, hidden = model.encode_pair(bef, aft)
    prefix = _Prefix(model, model.decoder_memory(hidden), use_cache, repeat=k)
    seqs = torch.full((batch * k, 1), SOT_ID, dtype=torch.long, device=bef.device)
    scores = torch.full((batch, k), float("-inf"), device=bef.device)
    scores[:, 0] = 0.0
    finished = torch.zeros(batch * k, dtype=torch.bool, device=bef.device)
    lengths = torch.zeros(batch * k, device=bef.device)
    offsets = (torch.arange(batch, device=bef.device) * k)[:, None]
    for _ in range(max_words):
        logp = F.log_softmax(prefix.logits(seqs).float(), dim=-1)
        vocab = logp.shape[-1]
        logp[finished] = float("-inf")
        logp[finished, PAD_ID] = 0.0
        cand = (scores.view(-1, 1) + logp).view(batch, k * vocab)
        scores, idx = cand.topk(k, dim=-1)
        src = (offsets + torch.div(idx, vocab, rounding_mode="floor")).view(-1)
        tok = (idx % vocab).view(-1)
        seqs = torch.cat([seqs[src], tok[:, None]], dim=1)
        prefix.reorder(src)
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
                    length_penalty: float = 0.0, use_cache: bool = True) -> list[str]:
    """Captions for a batch of pairs (greedy when beam_size == 1)."""
    ids = (beam_decode(model, bef, aft, max_words, beam_size, length_penalty, use_cache) if beam_size > 1
           else greedy_decode(model, bef, aft, max_words, use_cache))
    return ids_to_captions(tokenizer, ids)
