"""Decoding for VisualCOMET (spec 4.7): nucleus sampling with a KV cache over batched prompts, and beam search.

Every prompt has the same length (fixed segment layout), so prompts batch without padding. By default each prompt
gets its own generator seeded with ``seed`` - the original re-seeded before every prompt (pitfall 8, K), so batched
and one-by-one generation give the same samples. ``shared_stream=True`` (O) draws all prompts from one generator.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from common.errors import InputError
from visualcomet.model import VisualCometLMHead

VISUAL_KEYS = ("img_feats", "boxes_mask", "person_ids", "subject_ids", "boxes")


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


def beam_search(model: VisualCometLMHead, prompt: torch.Tensor, visual: dict[str, torch.Tensor] | None,
                num_beams: int = 5, length: int = 20, e_in_id: int = 0, length_penalty: float = 1.0,
                variant: str = "original") -> list[list[int]]:
    """Continuations of one prompt (P,) by ``beam_search_original`` (default) or ``beam_search_clean``."""
    if variant == "original":
        return beam_search_original(model, prompt, visual, num_beams, length, e_in_id, length_penalty)
    if variant == "clean":
        return beam_search_clean(model, prompt, visual, num_beams, length, e_in_id, length_penalty)
    raise ValueError(f"beam search variant must be one of {BEAM_VARIANTS}, got {variant!r}")


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
    step = batch_size if do_sample else 1
    for s in progress(range(0, len(keep), step), desc=f"generate {split}"):
        idx = keep[s:s + step]
        batch = {k: v.to(device) for k, v in vdata.collate([ds[i] for i in idx]).items()}
        visual = {k: batch[k] for k in VISUAL_KEYS if k in batch} or None
        if do_sample:
            toks = sample_sequence(model, batch["input_ids"], visual, length, num_samples, temperature, top_k, top_p,
                                   seed, shared_stream, generator)
            toks = finish_generations(toks, e_in, tokenizer.eot_id).view(len(idx), num_samples, -1).tolist()
        else:
            beams = beam_search(model, batch["input_ids"][0], visual, num_beams=num_samples, length=length,
                                e_in_id=e_in, variant=beam_variant)
            toks = [[b + [e_in] for b in beams]]
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
