"""Decoding for VisualCOMET (spec 4.7): nucleus sampling with a KV cache over batched prompts, and beam search.

Every prompt has the same length (fixed segment layout), so prompts batch without padding. By default each prompt
gets its own generator seeded with ``seed`` - the original re-seeded before every prompt (pitfall 8, K), so batched
and one-by-one generation give the same samples. ``shared_stream=True`` (O) draws all prompts from one generator.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from common.errors import InputError
from visualcomet.model import VisualCometLMHead

VISUAL_KEYS = ("img_feats", "boxes_mask", "person_ids", "subject_ids", "boxes")


def amp_context(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``--amp`` of the inference scripts: bf16 (CPU/CUDA) or fp16 (CUDA) autocast; ``none`` runs fp32."""
    if amp == "none":
        return contextlib.nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise InputError("--amp", "fp16 autocast needs a CUDA device; use --amp bf16 on CPU")
    if amp not in ("bf16", "fp16"):
        raise InputError("--amp", f"expected none, bf16 or fp16, got {amp!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def top_k_top_p_filtering(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0,
                          filter_value: float = -float("inf")) -> torch.Tensor:
    """Original filter: drop logits below the k-th largest, then keep token i iff the mass before it is < top_p."""
    logits = logits.clone()
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits[logits < kth] = filter_value
    if top_p > 0.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
        probs = F.softmax(sorted_logits, dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        remove_sorted = mass_before >= top_p
        remove_sorted[..., 0] = False
        remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
        kept = F.softmax(logits.masked_fill(remove, filter_value), dim=-1)
        logits = torch.log(kept).masked_fill(remove, filter_value)
    return logits


def _repeat(visual: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    return {k: v.repeat_interleave(n, dim=0) for k, v in visual.items() if k in VISUAL_KEYS}


@contextlib.contextmanager
def per_prompt_slots(model: VisualCometLMHead) -> Iterator[None]:
    """Image slots as if each prompt ran alone, as the original generated (one prompt per forward).

    Training zero-fills the slots of an example up to the batch's largest box count (pitfall 5); with one prompt
    that count is its own, so nothing is zero-filled. Keeping each example's own slots (``zero_fill_visual_slots =
    False``) gives that result for batches of prompts with different numbers of people too.
    """
    if not hasattr(model, "zero_fill_visual_slots"):  # a model without image slots
        yield
        return
    before = model.zero_fill_visual_slots
    model.zero_fill_visual_slots = False
    try:
        yield
    finally:
        model.zero_fill_visual_slots = before


@torch.no_grad()
def sample_sequence(model: VisualCometLMHead, prompts: torch.Tensor, visual: dict[str, torch.Tensor] | None,
                    length: int = 20, num_samples: int = 5, temperature: float = 1.0, top_k: int = 0,
                    top_p: float = 0.9, seed: int = 42, shared_stream: bool = False,
                    generator: torch.Generator | None = None, use_cache: bool = True) -> torch.Tensor:
    """(B*num_samples, length) sampled token ids; rows of prompt b are b*num_samples .. (b+1)*num_samples-1."""
    model.eval()
    B, P = prompts.shape
    device = prompts.device
    ids = prompts.repeat_interleave(num_samples, dim=0)
    vis = _repeat(visual, num_samples) if visual else {}
    if shared_stream:
        gens = [generator if generator is not None else torch.Generator(device=device).manual_seed(seed)] * B
    else:
        gens = [torch.Generator(device=device).manual_seed(seed) for _ in range(B)]
    with per_prompt_slots(model):
        out = model(ids, **vis, use_cache=use_cache)
    cache, generated = out["cache"], []
    for step in range(length):
        logits = out["logits"][:, -1, :].float() / (temperature if temperature > 0 else 1.0)
        filtered = top_k_top_p_filtering(logits, top_k=top_k, top_p=top_p)
        probs = F.softmax(filtered, dim=-1)
        nxt = torch.cat([torch.multinomial(probs[b * num_samples:(b + 1) * num_samples], 1, generator=gens[b])
                         for b in range(B)])
        generated.append(nxt)
        if step == length - 1:
            break
        if use_cache:
            out = model(nxt, cache=cache, use_cache=True, position_offset=P + step)
            cache = out["cache"]
        else:
            with per_prompt_slots(model):
                out = model(torch.cat([ids] + generated, dim=1), **vis)
    return torch.cat(generated, dim=1)


def finish_generations(tokens: torch.Tensor, e_in_id: int, eot_id: int) -> torch.Tensor:
    """Force the last token to <|e_in|> and blank everything after the first <|e_in|> (spec 4.7 step 4)."""
    tokens = tokens.clone()
    tokens[:, -1] = e_in_id
    first = (tokens == e_in_id).float().argmax(dim=1)
    after = torch.arange(tokens.shape[1], device=tokens.device)[None, :] > first[:, None]
    tokens[after] = eot_id
    return tokens


BEAM_VARIANTS = ("original", "clean")


class BeamHypotheses:
    """The n-best list of the original's ``BeamHypotheses`` (copied there from transformers 2.4.1), kept as is.

    ``add`` scores a hypothesis ``sum_logprobs / length ** length_penalty`` and appends it while fewer than ``n_hyp``
    are kept or it beats ``worst_score``; past ``n_hyp`` it deletes the lowest-scored entry and sets ``worst_score``
    to the second lowest score before the deletion. Entries stay in insertion order; equal sequences are not merged.
    """

    def __init__(self, n_hyp: int, length_penalty: float = 1.0):
        self.n_hyp, self.length_penalty = n_hyp, length_penalty
        self.hyp: list[tuple[float, list[int]]] = []
        self.worst_score = 1e9

    def add(self, hyp: list[int], sum_logprobs: float, length: int) -> None:
        """Offer ``hyp`` whose full sequence (prompt included) has ``length`` tokens."""
        score = sum_logprobs / length ** self.length_penalty
        if len(self.hyp) < self.n_hyp or score > self.worst_score:
            self.hyp.append((score, hyp))
            if len(self.hyp) > self.n_hyp:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.hyp))
                del self.hyp[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)


def _first_step(model: VisualCometLMHead, prompt: torch.Tensor, visual: dict[str, torch.Tensor] | None,
                num_beams: int) -> tuple[dict[str, Any], Any]:
    """Forward the prompt once per beam (visual tensors repeated along the batch, pitfall 13 F)."""
    ids = prompt[None].repeat(num_beams, 1)
    vis = _repeat(visual, num_beams) if visual else {}
    out = model(ids, **vis, use_cache=True)
    return out, out["cache"]


def _next_step(model: VisualCometLMHead, cache: Any, beam_idx: list[int], tokens: list[int],
               position: int) -> tuple[dict[str, Any], Any]:
    """Reorder the KV cache to the surviving beams and feed each its new token at ``position``."""
    device = next(model.parameters()).device
    cache.reorder_cache(torch.tensor(beam_idx, device=device))
    out = model(torch.tensor(tokens, device=device)[:, None], cache=cache, use_cache=True, position_offset=position)
    return out, out["cache"]


@torch.no_grad()
def beam_search_original(model: VisualCometLMHead, prompt: torch.Tensor, visual: dict[str, torch.Tensor] | None,
                         num_beams: int = 5, length: int = 20, e_in_id: int = 0, length_penalty: float = 1.0,
                         return_scores: bool = False) -> list[list[int]] | list[tuple[float, list[int]]]:
    """The original's ``beam_search_sequence`` (``--do_sample 0``): exactly ``num_beams`` continuations of ``prompt``.

    This per-prompt version (Python loop over the candidates) is the readable reference; the scripts run
    ``beam_search_batch``, which gives the same results for many prompts at once (tested).

    What it does, step for step like the original (2.4.1 ``BeamHypotheses``, length penalty 1, no early stopping):
    beams start from the prompt (P tokens) with scores [0, -1e9, ...]; each of the ``length`` steps adds the
    next-token log-probabilities to the beam scores and walks the 2*num_beams best (beam, token) pairs, best first:
    a pair whose token is <|e_in|> adds its beam as a hypothesis *without* the <|e_in|>, scored
    (summed log-prob incl. <|e_in|>) / (P + tokens so far) ** length_penalty; other pairs become the next beams until
    ``num_beams`` are found. At the last step every one of the 2*num_beams pairs adds its beam *without the token just
    chosen*, but with that token's log-prob in the score, divided by (P + length - 1): a beam can thus be added
    several times (duplicates are kept), and at most ``length - 1`` tokens are ever returned. The search always runs
    all ``length`` steps. Returned: the hypotheses in the order they entered the n-best list (not sorted), generated
    tokens only (no prompt, no <|e_in|>); with ``return_scores`` as (score, tokens) pairs. The one change from the
    original: the visual tensors are repeated per beam correctly (its 4-D ``repeat`` crashed, pitfall 13 F).
    """
    model.eval()
    if 2 * num_beams > model.config.vocab_size:
        raise ValueError(f"{num_beams} beams need a vocabulary of at least {2 * num_beams} tokens")
    P = prompt.shape[0]
    hyps = BeamHypotheses(num_beams, length_penalty)
    scores = torch.full((num_beams,), -1e9, device=prompt.device)
    scores[0] = 0.0
    seqs: list[list[int]] = [[] for _ in range(num_beams)]
    out, cache = _first_step(model, prompt, visual, num_beams)
    for cur_len in range(length):
        logp = F.log_softmax(out["logits"][:, -1, :].float(), dim=-1) + scores[:, None]
        V = logp.shape[-1]
        top, idx = torch.topk(logp.view(-1), 2 * num_beams)
        last = cur_len + 1 == length
        nxt: list[tuple[float, int, int]] = []
        for s, flat in zip(top.tolist(), idx.tolist()):
            b, tok = divmod(flat, V)
            if tok == e_in_id or last:
                hyps.add(list(seqs[b]), s, P + len(seqs[b]))
            else:
                nxt.append((s, tok, b))
            if len(nxt) == num_beams:
                break
        if last:
            break
        # at most one <|e_in|> per beam among 2*num_beams pairs, so num_beams live pairs always remain
        seqs = [seqs[b] + [tok] for _, tok, b in nxt]
        scores = torch.tensor([s for s, _, _ in nxt], device=prompt.device)
        out, cache = _next_step(model, cache, [b for _, _, b in nxt], [tok for _, tok, _ in nxt], P + cur_len)
    return list(hyps.hyp) if return_scores else [seq for _, seq in hyps.hyp]


@torch.no_grad()
def beam_search_clean(model: VisualCometLMHead, prompt: torch.Tensor, visual: dict[str, torch.Tensor] | None,
                      num_beams: int = 5, length: int = 20, e_in_id: int = 0, length_penalty: float = 1.0,
                      num_return: int | None = None,
                      return_scores: bool = False) -> list[list[int]] | list[tuple[float, list[int]]]:
    """Textbook beam search (``--beam_search clean``): up to ``num_return`` distinct continuations, best first.

    Per-prompt reference of ``beam_search_batch(..., variant="clean")`` (which the scripts run).

    Each step walks the 2*num_beams best (beam, token) extensions by summed log-prob: one ending in <|e_in|> is a
    finished hypothesis scored (summed log-prob incl. <|e_in|>) / (P + tokens before <|e_in|>) ** length_penalty,
    the others fill the ``num_beams`` live beams. The n-best list keeps the ``num_beams`` best distinct hypotheses.
    It stops early once ``num_beams`` are finished and the best live score / (P + step) ** length_penalty cannot beat
    the worst kept one, or after ``length`` steps; then every live beam is offered with all its tokens (the last
    chosen one included), scored / (P + its length) ** length_penalty. Returned: generated tokens only (no
    prompt, no <|e_in|>), sorted by score; with ``return_scores`` as (score, tokens) pairs.
    """
    model.eval()
    num_return = num_return or num_beams
    P = prompt.shape[0]
    scores = torch.full((num_beams,), -1e9, device=prompt.device)
    scores[0] = 0.0
    hyps: list[tuple[float, list[int]]] = []
    seqs: list[list[int]] = [[] for _ in range(num_beams)]
    out, cache = _first_step(model, prompt, visual, num_beams)

    def worst() -> float:
        """Score of the weakest kept hypothesis (-inf until num_beams are kept)."""
        return min(s for s, _ in hyps) if len(hyps) >= num_beams else -float("inf")

    def offer(score: float, seq: list[int]) -> None:
        """Keep ``seq`` if it is new and among the num_beams best."""
        if any(seq == kept for _, kept in hyps):
            return
        if len(hyps) < num_beams or score > worst():
            hyps.append((score, seq))
            hyps.sort(key=lambda h: -h[0])
            del hyps[num_beams:]

    for step in range(length):
        logp = F.log_softmax(out["logits"][:, -1, :].float(), dim=-1) + scores[:, None]
        V = logp.shape[-1]
        top, idx = torch.topk(logp.view(-1), min(2 * num_beams, logp.numel()))
        nxt: list[tuple[float, int, int]] = []
        for s, flat in zip(top.tolist(), idx.tolist()):
            b, tok = divmod(flat, V)
            if tok == e_in_id:
                offer(s / (P + len(seqs[b])) ** length_penalty, list(seqs[b]))
            else:
                nxt.append((s, tok, b))
            if len(nxt) == num_beams:
                break
        if not nxt:  # every candidate ended: nothing left to extend
            seqs = []
            break
        seqs = [seqs[b] + [tok] for _, tok, b in nxt]
        scores = torch.tensor([s for s, _, _ in nxt], device=prompt.device)
        best_possible = float(top.max()) / (P + step) ** length_penalty
        if step == length - 1 or (len(hyps) >= num_beams and worst() >= best_possible):
            break
        out, cache = _next_step(model, cache, [b for _, _, b in nxt], [tok for _, tok, _ in nxt], P + step)
    for s, seq in zip(scores.tolist(), seqs):
        offer(s / (P + len(seq)) ** length_penalty, seq)
    ranked = hyps[:num_return]
    return ranked if return_scores else [seq for _, seq in ranked]


class _BatchHypotheses:
    """The n-best lists of B prompts as tensors: ``keep`` hypotheses each, with insertion stamps for the order.

    ``add_original`` follows ``BeamHypotheses.add`` (append while fewer than ``keep`` are kept or the score beats the
    lowest kept one; when over, the lowest - the earliest inserted among equal scores - is deleted); ``offer_clean``
    follows ``beam_search_clean``'s ``offer`` (a sequence already kept is ignored; when over, the lowest - the latest
    inserted among equal scores - is deleted). Both are vectorised over the prompts; scores are float64 like the
    Python floats of the per-prompt versions.
    """

    def __init__(self, batch: int, keep: int, max_len: int, device: torch.device):
        self.keep = keep
        self.scores = torch.full((batch, keep), float("inf"), dtype=torch.float64, device=device)
        self.tokens = torch.full((batch, keep, max(1, max_len)), -1, dtype=torch.long, device=device)
        self.lengths = torch.zeros(batch, keep, dtype=torch.long, device=device)
        self.stamps = torch.full((batch, keep), -1, dtype=torch.long, device=device)
        self.count = torch.zeros(batch, dtype=torch.long, device=device)
        self.clock = 0

    def _kept(self) -> torch.Tensor:
        return self.stamps >= 0

    def worst(self) -> torch.Tensor:
        """(B,) lowest kept score (+inf while the list is empty)."""
        return torch.where(self._kept(), self.scores, torch.inf).min(1).values

    def _store(self, rows: torch.Tensor, slot: torch.Tensor, score: torch.Tensor, seq: torch.Tensor) -> None:
        """Write ``seq`` (B, t) with ``score`` into ``slot`` for the prompts in ``rows`` (bool (B,))."""
        idx = rows.nonzero(as_tuple=True)[0]
        if idx.numel() == 0:
            return
        s, t = slot[idx], seq.shape[1]
        self.scores[idx, s] = score[idx]
        self.tokens[idx, s] = -1
        if t:
            self.tokens[idx, s, :t] = seq[idx]
        self.lengths[idx, s] = t
        self.stamps[idx, s] = self.clock
        self.clock += 1

    def add_original(self, rows: torch.Tensor, score: torch.Tensor, seq: torch.Tensor) -> None:
        """``BeamHypotheses.add`` for the prompts in ``rows``."""
        full = self.count >= self.keep
        accept = rows & (~full | (score > self.worst()))
        open_slot = self.count.clamp(max=self.keep - 1)
        # the lowest kept score, earliest stamp first among equal scores
        key = torch.where(self._kept(), self.scores, torch.inf)
        lowest = torch.where(key == key.min(1, keepdim=True).values, self.stamps, torch.iinfo(torch.long).max)
        slot = torch.where(full, lowest.argmin(1), open_slot)
        self._store(accept, slot, score, seq)
        self.count += (accept & ~full).long()

    def offer_clean(self, rows: torch.Tensor, score: torch.Tensor, seq: torch.Tensor) -> None:
        """``beam_search_clean``'s ``offer`` for the prompts in ``rows``."""
        t = seq.shape[1]
        same = (self.lengths == t) & self._kept()
        if t:
            same &= (self.tokens[:, :, :t] == seq[:, None, :]).all(-1)
        full = self.count >= self.keep
        accept = rows & ~same.any(1) & (~full | (score > self.worst()))
        key = torch.where(self._kept(), self.scores, torch.inf)
        lowest = torch.where(key == key.min(1, keepdim=True).values, self.stamps, -1)
        slot = torch.where(full, lowest.argmax(1), self.count.clamp(max=self.keep - 1))
        self._store(accept, slot, score, seq)
        self.count += (accept & ~full).long()

    def results(self, best_first: bool) -> list[list[tuple[float, list[int]]]]:
        """Per prompt: (score, tokens) in insertion order, or best first (equal scores: earlier inserted first)."""
        out = []
        for b in range(self.scores.shape[0]):
            kept = [i for i in range(self.keep) if self.stamps[b, i] >= 0]
            if best_first:
                kept.sort(key=lambda i: (-float(self.scores[b, i]), int(self.stamps[b, i])))
            else:
                kept.sort(key=lambda i: int(self.stamps[b, i]))
            out.append([(float(self.scores[b, i]), self.tokens[b, i, :int(self.lengths[b, i])].tolist())
                        for i in kept])
        return out


@torch.no_grad()
def beam_search_batch(model: VisualCometLMHead, prompts: torch.Tensor, visual: dict[str, torch.Tensor] | None,
                      num_beams: int = 5, length: int = 20, e_in_id: int = 0, length_penalty: float = 1.0,
                      variant: str = "original",
                      return_scores: bool = False) -> list[list[list[int]]] | list[list[tuple[float, list[int]]]]:
    """``beam_search_original`` / ``beam_search_clean`` for B prompts (B, P) at once: B*num_beams rows per forward.

    The candidate selection is tensor code over all prompts and beams (no Python loop over beams): the 2*num_beams
    best (beam, token) pairs per prompt are walked in order up to the num_beams-th pair that does not end in
    <|e_in|>; those ending in <|e_in|> before it become hypotheses, the others the next beams; the KV cache is
    reordered once per step. The n-best lists are ``_BatchHypotheses``. Results, scores included, are those of the
    per-prompt functions (tested); with ``variant="clean"`` a prompt whose search has stopped is frozen while the
    others go on, and the loop ends when all have stopped.
    """
    if variant not in BEAM_VARIANTS:
        raise ValueError(f"beam search variant must be one of {BEAM_VARIANTS}, got {variant!r}")
    model.eval()
    K = num_beams
    if 2 * K > model.config.vocab_size:
        raise ValueError(f"{K} beams need a vocabulary of at least {2 * K} tokens")
    B, P = prompts.shape
    device = prompts.device
    clean = variant == "clean"
    hyps = _BatchHypotheses(B, K, length, device)
    scores = torch.full((B, K), -1e9, device=device)
    scores[:, 0] = 0.0
    seqs = torch.zeros(B, K, 0, dtype=torch.long, device=device)
    live = torch.ones(B, dtype=torch.bool, device=device)  # clean variant: prompts still searching
    ids = prompts.repeat_interleave(K, dim=0)
    with per_prompt_slots(model):
        out = model(ids, **(_repeat(visual, K) if visual else {}), use_cache=True)
    cache = out["cache"]
    order = torch.arange(2 * K, device=device)
    for step in range(length):
        logp = F.log_softmax(out["logits"][:, -1, :].float(), dim=-1).view(B, K, -1) + scores[:, :, None]
        V = logp.shape[-1]
        top, idx = torch.topk(logp.view(B, -1), 2 * K, dim=1)
        beam, tok = idx // V, idx % V
        ends = tok == e_in_id
        walked = (torch.cumsum((~ends).long(), 1) - (~ends).long()) < K  # pairs before the K-th live one
        last = step + 1 == length
        ended = ends & walked if not (last and not clean) else torch.ones_like(ends)
        denom = float((P + step) ** length_penalty)
        for j in ended.any(0).nonzero(as_tuple=True)[0].tolist():  # candidate ranks (<= 2K), not beams
            rows = ended[:, j] & live
            prefix = seqs.gather(1, beam[:, j, None, None].expand(-1, 1, seqs.shape[2]))[:, 0]
            if clean:
                hyps.offer_clean(rows, top[:, j].double() / denom, prefix)
            else:
                hyps.add_original(rows, top[:, j].double() / denom, prefix)
        if last and not clean:
            break
        pick = torch.argsort(ends.long() * 2 * K + order, dim=1)[:, :K]  # the first K live pairs, in order
        src = beam.gather(1, pick)
        seqs = torch.cat([seqs.gather(1, src[:, :, None].expand(-1, -1, seqs.shape[2])),
                          tok.gather(1, pick)[:, :, None]], dim=2)
        scores = top.gather(1, pick)
        if clean:
            best_possible = top[:, 0].double() / denom
            stop = live & (torch.full_like(live, last) | ((hyps.count >= K) & (hyps.worst() >= best_possible)))
            if stop.any():
                final = float((P + step + 1) ** length_penalty)
                for k in range(K):  # the live beams of the stopping prompts, each offered once
                    hyps.offer_clean(stop, scores[:, k].double() / final, seqs[:, k])
                live &= ~stop
            if not live.any():
                break
        flat = (src + torch.arange(B, device=device)[:, None] * K).view(-1)
        cache.reorder_cache(flat)
        out = model(seqs[:, :, -1].reshape(-1, 1), cache=cache, use_cache=True, position_offset=P + step)
        cache = out["cache"]
    results = hyps.results(best_first=clean)
    return results if return_scores else [[seq for _, seq in r] for r in results]


def beam_search(model: VisualCometLMHead, prompt: torch.Tensor, visual: dict[str, torch.Tensor] | None,
                num_beams: int = 5, length: int = 20, e_in_id: int = 0, length_penalty: float = 1.0,
                variant: str = "original") -> list[list[int]]:
    """Continuations of one prompt (P,): the original's search (default) or the clean one, via ``beam_search_batch``."""
    return beam_search_batch(model, prompt[None], visual, num_beams, length, e_in_id, length_penalty, variant)[0]


def generation_output(record: dict[str, Any], generations: list[str]) -> dict[str, Any]:
    """One element of the output JSON (spec 2.3): annotation fields, relation, event_idx, generations."""
    skip = {"intent", "before", "after", "event_name", "inference_text", "inference_text_name", "person2name",
            "name2person", "inference_relation", "event_idx"}
    out = {k: v for k, v in record.items() if k not in skip}
    out["inference_relation"] = record["inference_relation"]
    out["event_idx"] = record["event_idx"]
    out["generations"] = generations
    return out


def layout_from_config(config: Any, max_seq_len: int) -> "vdata.Layout":
    """Segment lengths stored in the model config (fallbacks 39/22/23 of the original loaders)."""
    from visualcomet import data as vdata

    return vdata.Layout(getattr(config, "max_event", vdata.DEFAULT_MAX_EVENT),
                        getattr(config, "max_place", vdata.DEFAULT_MAX_PLACE),
                        getattr(config, "max_inference", vdata.DEFAULT_MAX_INFERENCE), max_seq_len)


def generate_split(model: VisualCometLMHead, tokenizer: Any, paths: Any, split: str, max_seq_len: int = 128,
                   include_image: bool = True, include_text: bool = True, use_all_dets: bool = False,
                   relations: tuple[str, ...] = ("intent", "before", "after"), length: int = 20,
                   temperature: float = 1.0, top_k: int = 0, top_p: float = 0.9, do_sample: bool = True,
                   num_samples: int = 5, batch_size: int = 1, seed: int = 42, shared_stream: bool = False,
                   device: torch.device | str = "cpu", cache_dir: str | None = None, cache_postfix: str | None = None,
                   overwrite_cache: bool = False, beam_variant: str = "original") -> list[dict[str, Any]]:
    """Generations for every (annotation, relation) of ``split`` in the original output order (spec 2.3).

    ``do_sample=False`` runs ``beam_search`` with ``num_beams=num_samples`` and ``beam_variant`` (see there).
    """
    from common.distributed import progress
    from visualcomet import data as vdata

    layout = layout_from_config(model.config, max_seq_len)
    examples, records = vdata.build_generation_data(paths, tokenizer, layout, split, include_text, cache_dir,
                                                    cache_postfix, overwrite_cache)
    keep = [i for i, r in enumerate(records) if r["inference_relation"] in relations]
    ds = vdata.VCGDataset(records, examples, None, tokenizer, paths, include_image, use_all_dets, model.feature_dim)
    e_in = tokenizer.convert_tokens_to_ids("<|e_in|>")
    length = min(length, model.config.n_positions) if length >= 0 else model.config.n_positions
    generator = torch.Generator(device=device).manual_seed(seed) if shared_stream else None
    outputs: list[dict[str, Any]] = []
    model.eval()
    for s in progress(range(0, len(keep), batch_size), desc=f"generate {split}"):
        idx = keep[s:s + batch_size]
        batch = {k: v.to(device) for k, v in vdata.collate([ds[i] for i in idx]).items()}
        visual = {k: batch[k] for k in VISUAL_KEYS if k in batch} or None
        if do_sample:
            toks = sample_sequence(model, batch["input_ids"], visual, length, num_samples, temperature, top_k, top_p,
                                   seed, shared_stream, generator)
            toks = finish_generations(toks, e_in, tokenizer.eot_id).view(len(idx), num_samples, -1).tolist()
        else:
            beams = beam_search_batch(model, batch["input_ids"], visual, num_beams=num_samples, length=length,
                                      e_in_id=e_in, variant=beam_variant)
            toks = [[b + [e_in] for b in prompt_beams] for prompt_beams in beams]
        for i, rows in zip(idx, toks):
            rec = records[i]
            gens = [vdata.replace_names(tokenizer.decode(row), rec["name2person"]) for row in rows]
            outputs.append(generation_output(rec, gens))
    return outputs


@torch.no_grad()
def predict(model: VisualCometLMHead, tokenizer: Any, image_features: Any, object_features: Any, names: list[str],
            boxes: Any, width: float, height: float, event: str, place: str, relation: str = "intent",
            num_samples: int = 5, length: int = 20, top_p: float = 0.9, seed: int = 42,
            do_sample: bool = True, beam_variant: str = "original") -> list[str]:
    """Inferences for one in-the-wild image (issue #12): features + boxes + class names, no VCR files needed.

    ``names[j]`` / ``boxes[j]`` describe object j, referred to as person number j+1 in ``event``; masks are not needed.
    """
    import numpy as np

    from visualcomet import data as vdata

    cfg = model.config
    layout = layout_from_config(cfg, 10 ** 6)
    event_name, mapping = vdata.map_numbers(event)
    record = {"event_name": event_name, "place": place, "inference_relation": relation, "person2name": mapping}
    ids, _ = vdata.encode_record(record, tokenizer, layout, generation=True)
    objs = np.asarray(object_features)
    img, objs = vdata.check_features(image_features, objs.reshape(len(names), -1) if objs.size else objs,
                                     "predict() inputs")
    if img.shape[0] != model.feature_dim:
        raise InputError("predict() inputs", f"feature width {img.shape[0]} but the model expects "
                                             f"{model.feature_dim} (config feature_dim)", field="image_features")
    meta = {"names": names, "boxes": [list(b)[:4] for b in boxes], "width": width, "height": height}
    visual = vdata.visual_tensors(record, tokenizer, meta, img, objs)
    device = next(model.parameters()).device
    prompt = torch.tensor([ids], device=device)
    vis = {k: v[None].to(device) for k, v in visual.items() if k in VISUAL_KEYS}
    e_in = tokenizer.convert_tokens_to_ids("<|e_in|>")
    if do_sample:
        rows = finish_generations(sample_sequence(model, prompt, vis, length, num_samples, top_p=top_p, seed=seed),
                                  e_in, tokenizer.eot_id).tolist()
    else:
        rows = [b + [e_in] for b in beam_search(model, prompt[0], vis, num_samples, length, e_in,
                                                variant=beam_variant)]
    name2person = {v: k for k, v in mapping.items()}
    return [vdata.replace_names(tokenizer.decode(r), name2person) for r in rows]
