"""Training losses: symmetric InfoNCE over pair/text similarities (spec 4.5), caption CE (spec 4.6)."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


class AllGather(torch.autograd.Function):
    """all_gather + cat along dim 0; backward returns this rank's slice of the gradient (as the original)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.batch = dist.get_rank(), tensor.shape[0]
        out = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(out, tensor.contiguous())
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad[ctx.rank * ctx.batch : (ctx.rank + 1) * ctx.batch]


def gather_if_distributed(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from all ranks when torch.distributed is initialised (identity otherwise)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return AllGather.apply(tensor)
    return tensor


def cross_en(sim: torch.Tensor) -> torch.Tensor:
    """CrossEn: mean over rows of -log_softmax(sim)[i, i]."""
    return -F.log_softmax(sim, dim=-1).diagonal().mean()


def symmetric_infonce(text: torch.Tensor, pair: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """(CrossEn(S) + CrossEn(S^T)) / 2 with S = exp(logit_scale) * cos(text, pair), in float32 even under autocast."""
    with torch.autocast(text.device.type, enabled=False):
        text = F.normalize(text.float(), dim=-1)
        pair = F.normalize(pair.float(), dim=-1)
        sim = logit_scale.float().exp() * text @ pair.t()
        return (cross_en(sim) + cross_en(sim.t())) / 2


def caption_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Token cross-entropy ignoring id 0 (which is also the BPE token '!', spec 9.14: kept)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=0)
