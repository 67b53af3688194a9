"""Training criteria: token-level cross-entropy, label smoothing and the SCST policy-gradient loss (spec 4.6)."""
from __future__ import annotations

import torch
from torch import nn


class LanguageModelCriterion(nn.Module):
    """-sum(logp[target] * mask) / sum(mask) over every (row, step)."""

    def forward(self, logprobs: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """logprobs (N, L, V+1), target (N, L'), mask (N, L') -> scalar."""
        target = target[:, : logprobs.size(1)]
        mask = mask[:, : logprobs.size(1)].to(logprobs.dtype)
        picked = logprobs.gather(2, target.unsqueeze(2)).squeeze(2)
        return -(picked * mask).sum() / mask.sum()


class LabelSmoothing(nn.Module):
    """KL(true || model): 1-s on the target, s/`spread` on every other entry of the V+1 outputs.

    The Spatial seed spreads s/(V-1) with V = vocab_size (spec 9.20); ORT's own criterion divides by its
    output size minus one, s/V. `spread` defaults to the seed's V-1; `xe_criterion` picks per model.
    """

    def __init__(self, vocab_size: int, smoothing: float = 0.0, spread: int | None = None):
        super().__init__()
        self.vocab_size = vocab_size
        self.spread = vocab_size - 1 if spread is None else spread
        self.smoothing = smoothing
        self.confidence = 1.0 - smoothing
        self.criterion = nn.KLDivLoss(reduction="none")

    def forward(self, logprobs: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked mean of the per-token KL divergence."""
        target = target[:, : logprobs.size(1)]
        mask = mask[:, : logprobs.size(1)].to(logprobs.dtype)
        true_dist = torch.full_like(logprobs, self.smoothing / self.spread)
        true_dist.scatter_(2, target.unsqueeze(2), self.confidence)
        kl = self.criterion(logprobs, true_dist).sum(2)
        return (kl * mask).sum() / mask.sum()


class RewardCriterion(nn.Module):
    """-sum(logp * reward * mask) / sum(mask), mask = first token plus every token after a word (incl. first EOS)."""

    def forward(self, logprobs: torch.Tensor, seq: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
        """logprobs, seq, reward all (N, T)."""
        mask = (seq > 0).to(logprobs.dtype)
        mask = torch.cat([mask.new_ones(mask.size(0), 1), mask[:, :-1]], 1)
        return -(logprobs * reward * mask).sum() / mask.sum()


def xe_criterion(caption_model: str, vocab_size: int, label_smoothing: float) -> nn.Module:
    """The XE criterion of train.py: label smoothing with each original's formula for its model (issue 17)."""
    from spatial_captioning.models import ORT_MODELS

    if label_smoothing <= 0:
        return LanguageModelCriterion()
    spread = vocab_size if caption_model in ORT_MODELS else vocab_size - 1
    return LabelSmoothing(vocab_size, label_smoothing, spread)
