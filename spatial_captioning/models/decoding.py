"""Decoding shared by every captioner: greedy, temperature sampling and batched (diverse) beam search.

A model provides `init_decode(feats, masks, boxes) -> state` (a tuple of batch-first tensors) and
`decode_step(it, state) -> (logprobs (n, V+1), state)`; index 0 is BOS, EOS and PAD at once (spec 4.1).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

State = tuple[torch.Tensor, ...]

PAPER = "spatial_captioning"
# The options that rebuild a model (train.py's names) plus the feature normalisation its inputs need.
CONFIG_KEYS = ("caption_model", "vocab_size", "seq_length", "input_encoding_size", "img_feat_size", "num_layers",
               "ff_size", "heads", "dropout", "use_grid", "num_grids", "enc_pos_embedding", "enc_pos_type",
               "cross_attn", "norm", "ff_activation", "use_box", "box_trignometric_embedding", "legacy_extra_skip",
               "rnn_type", "hidden_size", "unk_index", "norm_img_feat", "norm_box_feat")
_CARD = {
    "paper": "Spatial-Image-Captioning (sidharth5n) / Object Relation Transformer (Herdade et al. 2019)",
    "task": "image captioning from bottom-up region features (+ grid vectors or relative boxes)",
    "how_to_load": "from spatial_captioning.models import CaptionModel\n"
                   "model = CaptionModel.from_pretrained('DIR').eval()\n"
                   "seq, _ = model(feats, masks, boxes, opt={'beam_size': 3}, mode='sample')",
}

DEFAULT_SAMPLE_OPT = {"sample_max": 1, "beam_size": 1, "temperature": 1.0, "decoding_constraint": 0,
                      "group_size": 1, "diversity_lambda": 0.5, "max_ppl": 0}


def reorder_state(state: State, index: torch.Tensor) -> State:
    """Select rows `index` of every batch-first tensor of a decoding state."""
    return tuple(s.index_select(0, index) for s in state)


class CaptionModel(nn.Module):
    """Base class: `model(*args, mode='forward'|'sample')` dispatch as in the original."""

    seq_length: int
    unk_index: int | None = None  # index penalised by beam search (spec 9.12); None when the vocab has no UNK
    config: dict[str, Any]  # plain-JSON options that rebuild the model (set by models.setup)

    def save_pretrained(self, directory: str | Path, metrics_file: str | Path | None = None,
                        training_data: str = "not recorded") -> Path:
        """Write config.json + model.safetensors + a model card (metrics from an eval.py results JSON)."""
        from common.pretrained import save_pretrained

        card: dict[str, Any] = {**_CARD, "training_data": training_data}
        if metrics_file is not None:
            from spatial_captioning.evaluation import read_json

            results = read_json(metrics_file, "results file")
            overall = results.get("overall") if isinstance(results, dict) else None
            if not isinstance(overall, dict) or not overall:
                from common.errors import InputError
                raise InputError(metrics_file, "no 'overall' scores (eval.py --language_eval 1 writes them)",
                                 field="overall")
            card.update(metrics={k: float(v) for k, v in overall.items()}, metrics_source=str(metrics_file))
        return save_pretrained(self, directory, paper=PAPER, architecture=type(self).__name__,
                               config=self.config, card=card)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "CaptionModel":
        """Rebuild the model from a save_pretrained directory (no pickle involved); eval mode."""
        from types import SimpleNamespace

        from common.pretrained import CONFIG_NAME, load_into, read_pretrained
        from spatial_captioning.models import setup

        config, state_dict = read_pretrained(directory, paper=PAPER)
        options = {k: v for k, v in config.items() if k in CONFIG_KEYS}
        try:
            model = setup(SimpleNamespace(**options))
        except (ValueError, TypeError) as err:
            from common.checkpoint import CheckpointError
            raise CheckpointError(Path(directory) / CONFIG_NAME, f"does not describe a model ({err})") from None
        if cls is not CaptionModel and not isinstance(model, cls):
            from common.checkpoint import CheckpointError
            raise CheckpointError(Path(directory) / CONFIG_NAME, f"holds a {type(model).__name__}, not a {cls.__name__}",
                                  field="architecture")
        return load_into(model, state_dict, Path(directory)).eval()

    def forward(self, *args: Any, mode: str = "forward", **kwargs: Any):
        """Dispatch to `_forward` (teacher-forced log-probs) or `_sample` (decoding)."""
        if mode == "forward":
            return self._forward(*args, **kwargs)
        if mode == "sample":
            return self._sample(*args, **kwargs)
        raise ValueError(f"unknown mode {mode!r}")

    def _sample(self, feats: torch.Tensor, masks: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
                opt: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode (N, T) token ids and their log-probs with the options of spec 4.5."""
        opt = {**DEFAULT_SAMPLE_OPT, **(opt or {})}
        if int(opt["beam_size"]) > 1:
            return self.beam_search(feats, masks, boxes, opt)
        return self.greedy_or_sample(feats, masks, boxes, opt)

    def greedy_or_sample(self, feats: torch.Tensor, masks: torch.Tensor | None, boxes: torch.Tensor | None,
                         opt: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy (sample_max=1) or multinomial decoding; sampled log-probs keep their graph for SCST."""
        sample_max = int(opt.get("sample_max", 1))
        temperature = float(opt.get("temperature", 1.0))
        constraint = int(opt.get("decoding_constraint", 0))
        state = self.init_decode(feats, masks, boxes)
        n = state[0].size(0)
        device = state[0].device
        seq = torch.zeros(n, self.seq_length, dtype=torch.long, device=device)
        seq_logprobs = torch.zeros(n, self.seq_length, device=device)
        it = torch.zeros(n, dtype=torch.long, device=device)
        unfinished = torch.ones(n, dtype=torch.bool, device=device)
        for t in range(self.seq_length):
            logprobs, state = self.decode_step(it, state)
            if constraint and t > 0:
                penalty = torch.zeros_like(logprobs).scatter_(1, it.unsqueeze(1), float("-inf"))
                logprobs = logprobs + penalty
            if sample_max:
                sample_logprobs, it = torch.max(logprobs.detach(), 1)
            else:
                # Unnormalised exp(logp / T) is what the original fed to multinomial (spec 9.13, kept).
                probs = torch.exp(logprobs.detach() / temperature)
                it = torch.multinomial(probs, 1).squeeze(1)
                sample_logprobs = logprobs.gather(1, it.unsqueeze(1)).squeeze(1)
            unfinished = unfinished & (it > 0)
            it = it * unfinished.long()
            seq[:, t] = it
            seq_logprobs[:, t] = sample_logprobs
            if not bool(unfinished.any()):
                break
        return seq, seq_logprobs

    @torch.no_grad()
    def beam_search(self, feats: torch.Tensor, masks: torch.Tensor | None, boxes: torch.Tensor | None,
                    opt: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched beam search with the semantics of the original per-image CaptionModel.beam_search (spec 4.5).

        Returns the best done beam per image; `self.done_beams[b]` keeps every group's final beams.
        """
        beam_size = int(opt.get("beam_size", 1))
        group_size = int(opt.get("group_size", 1))
        diversity_lambda = float(opt.get("diversity_lambda", 0.5))
        constraint = int(opt.get("decoding_constraint", 0))
        max_ppl = int(opt.get("max_ppl", 0))
        if beam_size < 1 or group_size < 1 or beam_size % group_size:
            raise ValueError(f"beam_size {beam_size} must be a positive multiple of group_size {group_size}")
        bdash = beam_size // group_size
        T = self.seq_length

        state0 = self.init_decode(feats, masks, boxes)
        b = state0[0].size(0)
        device = state0[0].device
        # BOS step once per image, then replicate for every beam of every group.
        logprobs0, state0 = self.decode_step(torch.zeros(b, dtype=torch.long, device=device), state0)
        rep = torch.arange(b, device=device).repeat_interleave(bdash)
        states = [reorder_state(state0, rep) for _ in range(group_size)]
        logprobs_g = [logprobs0.index_select(0, rep).float() for _ in range(group_size)]
        seqs = [torch.zeros(b, bdash, T, dtype=torch.long, device=device) for _ in range(group_size)]
        seq_lps = [torch.zeros(b, bdash, T, device=device) for _ in range(group_size)]
        sums = [torch.zeros(b, bdash, device=device) for _ in range(group_size)]
        done: list[list[list[dict]]] = [[[] for _ in range(b)] for _ in range(group_size)]
        vocab = logprobs0.size(1)
        cols = min(bdash, vocab)
        batch_ix = torch.arange(b, device=device)

        for t in range(T + group_size - 1):
            for m in range(group_size):
                local_t = t - m
                if local_t < 0 or local_t > T - 1:
                    continue
                lp = logprobs_g[m].view(b, bdash, vocab).clone()
                if constraint and local_t > 0:
                    lp.scatter_(2, seqs[m][:, :, local_t - 1:local_t], float("-inf"))
                if self.unk_index is not None:
                    lp[:, :, self.unk_index] -= 1000.0  # spec 9.12: UNK is never chosen by beam search
                unaug = lp.clone()
                for prev in range(m):  # diversity penalty, once per earlier-group choice (duplicates count twice)
                    chosen = seqs[prev][:, :, local_t]  # (b, bdash)
                    lp.scatter_add_(2, chosen.unsqueeze(1).expand(b, bdash, bdash),
                                    torch.full((b, bdash, bdash), -diversity_lambda, device=device))
                ys, ix = torch.sort(lp, dim=2, descending=True, stable=True)
                rows = 1 if local_t == 0 else bdash
                ys, ix = ys[:, :rows, :cols], ix[:, :rows, :cols]
                cand = sums[m][:, :rows].unsqueeze(2) + ys  # (b, rows, cols)
                # the original lists candidates word-major (c outer, q inner) before a stable sort by score
                cand_flat = cand.transpose(1, 2).reshape(b, -1)
                order = torch.sort(cand_flat, dim=1, descending=True, stable=True).indices[:, :bdash]
                q = order % rows
                c = order // rows
                words = ix[batch_ix.unsqueeze(1), q, c]  # (b, bdash)
                new_sums = cand_flat.gather(1, order)
                word_lp = unaug[batch_ix.unsqueeze(1), q, words]
                seqs[m] = seqs[m][batch_ix.unsqueeze(1), q].clone()
                seq_lps[m] = seq_lps[m][batch_ix.unsqueeze(1), q].clone()
                seqs[m][:, :, local_t] = words
                seq_lps[m][:, :, local_t] = word_lp
                flat_q = (batch_ix.unsqueeze(1) * bdash + q).reshape(-1)
                states[m] = reorder_state(states[m], flat_q)
                finished = (words == 0) | (local_t == T - 1)
                for bi, vi in finished.nonzero().tolist():
                    p = float(new_sums[bi, vi])
                    if max_ppl:
                        p = p / (local_t + 1)
                    done[m][bi].append({"seq": seqs[m][bi, vi].clone(), "logps": seq_lps[m][bi, vi].clone(),
                                        "unaug_p": float(seq_lps[m][bi, vi].sum()), "p": p})
                new_sums = new_sums.masked_fill(finished, -1000.0)
                sums[m] = new_sums
                if local_t < T - 1:
                    logits, states[m] = self.decode_step(words.reshape(-1), states[m])
                    logprobs_g[m] = logits.float()

        self.done_beams = []
        for bi in range(b):
            beams: list[dict] = []
            for m in range(group_size):
                beams += sorted(done[m][bi], key=lambda d: -d["p"])[:bdash]
            self.done_beams.append(beams)
        seq = torch.stack([beams[0]["seq"] for beams in self.done_beams])
        seq_logprobs = torch.stack([beams[0]["logps"] for beams in self.done_beams])
        return seq, seq_logprobs
