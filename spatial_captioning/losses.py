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
    """KL(true || model) with s/(V-1) off-target mass, V = vocab_size (not V+1; spec 9.20, kept)."""

    def __init__(self, vocab_size: int, smoothing: float = 0.0):
        super().__init__()
        self.vocab_size = vocab_size
        self.smoothing = smoothing
        self.confidence = 1.0 - smoothing
        self.criterion = nn.KLDivLoss(reduction="none")

    def forward(self, logprobs: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked mean of the per-token KL divergence."""
        target = target[:, : logprobs.size(1)]
        mask = mask[:, : logprobs.size(1)].to(logprobs.dtype)
        true_dist = torch.full_like(logprobs, self.smoothing / (self.vocab_size - 1))
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
