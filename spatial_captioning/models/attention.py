"""Attention blocks: scaled dot-product multi-head attention and X-Linear (bilinear pooling) attention.

`MultiHeadedAttention` (and ORT's box attention) run either the original's eager formula or
`torch.nn.functional.scaled_dot_product_attention` (`--attn_impl sdpa`, fused kernels; equal up to rounding).
X-Linear attention is not a dot-product attention and always runs its own exact formula.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ATTN_IMPLS = ("eager", "sdpa")
MASK_VALUE = -1e9  # the original's fill value for masked scores


def mask_value(dtype: torch.dtype) -> float:
    """The original's -1e9 where the dtype holds it (fp32/bf16), else the dtype's lowest value (fp16 autocast)."""
    return max(MASK_VALUE, torch.finfo(dtype).min)


def set_attention_impl(model: nn.Module, impl: str) -> nn.Module:
    """Select `eager` (the original's formula) or `sdpa` for every dot-product attention of `model`; returns it."""
    if impl not in ATTN_IMPLS:
        raise ValueError(f"--attn_impl must be one of {ATTN_IMPLS}, got {impl!r}")
    for module in model.modules():
        if hasattr(module, "attn_impl"):
            module.attn_impl = impl
    return model


def scaled_dot_product(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (softmax(QK^T/sqrt(d)) V, attention weights); masked scores are filled with -1e9 as in the original."""
    d_k = query.size(-1)
    scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(d_k)
    if mask is not None:
        scores = scores.masked_fill(mask == 0, mask_value(scores.dtype))
    weights = scores.softmax(dim=-1)
    if dropout is not None:
        weights = dropout(weights)
    return torch.matmul(weights, value), weights


class MultiHeadedAttention(nn.Module):
    """Multi-head attention with `linears.0..3` = Q, K, V and output projections (spec 4.2)."""

    def __init__(self, heads: int, d_model: int, dropout: float = 0.1):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.d_k = d_model // heads
        self.h = heads
        self.linears = nn.ModuleList([nn.Linear(d_model, d_model) for _ in range(4)])
        self.dropout = nn.Dropout(p=dropout)
        self.attn_impl = "eager"

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend from query (N, Q, E) to key/value (N, K, E); mask (N, 1|Q, K)."""
        if mask is not None:
            mask = mask.unsqueeze(1)
        n = query.size(0)  # the original called query.shape(0) here (spec 9.1, fixed)
        q, k, v = [
            lin(x).view(n, -1, self.h, self.d_k).transpose(1, 2)
            for lin, x in zip(self.linears, (query, key, value))
        ]
        if self.attn_impl == "sdpa":
            # boolean mask (True = attend); the dropout on the weights is the kernel's own
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask != 0,
                                               dropout_p=self.dropout.p if self.training else 0.0)
        else:
            x, _ = scaled_dot_product(q, k, v, mask=mask, dropout=self.dropout)
        x = x.transpose(1, 2).contiguous().view(n, -1, self.h * self.d_k)
        return self.linears[-1](x)


class _FlatGroupNorm(nn.GroupNorm):
    """GroupNorm applied to the flattened (rows, E) view of a (..., E) tensor (spec 9.26)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        return super().forward(x.reshape(-1, shape[-1])).view(shape)


class XLinearPooling(nn.Module):
    """Spatial softmax + channel sigmoid gating over bilinear query-key maps (keys `embed`, `spatial`, `squeeze`)."""

    def __init__(self, d_k: int, mid_dim: int, dropout: float):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(d_k, mid_dim), nn.ReLU(), nn.Dropout(dropout))
        self.spatial = nn.Linear(mid_dim, 1)
        self.squeeze = nn.Sequential(nn.Linear(mid_dim, d_k), nn.Sigmoid())

    def forward(self, q1: torch.Tensor, k: torch.Tensor, q2: torch.Tensor, v: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        """q1, q2 (N, h, Q, d); k, v (N, h, K, d); mask (N, 1, 1, K) -> (N, h, Q, d)."""
        key_map = self.embed(q1.unsqueeze(-2) * k.unsqueeze(-3))  # (N, h, Q, K, mid)
        alpha_spatial = self.spatial(key_map).squeeze(-1)  # (N, h, Q, K)
        if mask is not None:
            alpha_spatial = alpha_spatial.masked_fill(mask == 0, mask_value(alpha_spatial.dtype))
            weights = mask.unsqueeze(-1).to(key_map.dtype)  # (N, 1, 1, K, 1)
            pooled = (key_map * weights).sum(-2) / weights.sum(-2)
        else:
            pooled = key_map.mean(-2)
        alpha_spatial = alpha_spatial.softmax(dim=-1)
        alpha_channel = self.squeeze(pooled)  # (N, h, Q, d)
        # sum_k alpha[k] * (q2 * v[k]) == q2 * (alpha @ v): the (N, h, Q, K, d) value map is never built (spec 4.4).
        return q2 * torch.matmul(alpha_spatial, v) * alpha_channel


class XLinearMultiHeadedAttention(nn.Module):
    """X-Linear cross-attention (Pan et al. 2020) as in the original: CELU + GroupNorm projections, no output projection."""

    def __init__(self, heads: int, d_model: int, dropout: float = 0.1):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.d_k = d_model // heads
        self.h = heads
        self.linears = nn.ModuleList([
            nn.Sequential(nn.Linear(d_model, d_model), nn.CELU(alpha=1.0), _FlatGroupNorm(heads, d_model))
            for _ in range(4)
        ])
        self.attention = XLinearPooling(self.d_k, self.d_k // 2, dropout)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend from query (N, Q, E) to memory (N, K, E) with mask (N, 1, K)."""
        if mask is not None:
            mask = mask.unsqueeze(1)
        n = query.size(0)

        def heads(lin: nn.Module, x: torch.Tensor) -> torch.Tensor:
            return lin(x).view(n, -1, self.h, self.d_k).transpose(1, 2)

        q1 = heads(self.linears[0], query)
        k = heads(self.linears[1], key)
        q2 = heads(self.linears[2], query)
        v = heads(self.linears[3], value)
        x = self.attention(q1, k, q2, v, mask)
        return x.transpose(1, 2).contiguous().view(n, -1, self.h * self.d_k)
