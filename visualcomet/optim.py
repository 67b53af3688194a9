"""The AdamW of transformers 2.4.1 (``transformers.optimization.AdamW``), which the original trained with.

It differs from ``torch.optim.AdamW`` in where eps and the weight decay enter (issue 12 item 5):

* eps is added to sqrt(v) *before* bias correction, and the correction is folded into the step size:
  ``step_size = lr * sqrt(1 - b2**t) / (1 - b1**t)``, ``p -= step_size * m / (sqrt(v) + eps)``; torch computes
  ``p -= lr / (1 - b1**t) * m / (sqrt(v / (1 - b2**t)) + eps)``, i.e. its eps is larger relative to the update, which
  matters for parameters whose gradients are below ~1e-6 (first-step updates differ by up to 0.7 x lr);
* decoupled weight decay is applied *after* the Adam step, to the already updated weights: ``p -= lr * wd * p``
  (torch decays before the step);
* ``correct_bias=False`` drops the bias correction (BERT-TF style); the original used the default True.

``foreach=True`` (the default) runs the same operations, in the same order, as multi-tensor ``torch._foreach_*``
calls over all parameters of a group that share a step count: one kernel launch per operation on CUDA instead of
one per parameter, bit-identical results (tested); ``foreach=False`` is the per-parameter loop of 2.4.1.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer


class OriginalAdamW(Optimizer):
    """transformers 2.4.1 ``AdamW(params, lr, betas, eps, weight_decay, correct_bias)`` on current torch."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0, correct_bias: bool = True, foreach: bool = True):
        if lr < 0.0:
            raise ValueError(f"invalid learning rate {lr}: must be >= 0")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas}: each must be in [0, 1)")
        if eps < 0.0:
            raise ValueError(f"invalid epsilon {eps}: must be >= 0")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      correct_bias=correct_bias, foreach=foreach))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter that has a gradient; returns the closure's loss if one is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group.get("foreach", False):
                self._step_foreach(group)
                continue
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("AdamW does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                step_size = group["lr"]
                if group["correct_bias"]:
                    step = state["step"]
                    step_size = step_size * math.sqrt(1.0 - beta2 ** step) / (1.0 - beta1 ** step)
                p.addcdiv_(exp_avg, denom, value=-step_size)
                if group["weight_decay"] > 0.0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        return loss

    def _step_foreach(self, group: dict[str, Any]) -> None:
        """The loop of ``step`` as multi-tensor operations, per (device, dtype, step count) bucket."""
        beta1, beta2 = group["betas"]
        buckets: dict[tuple[Any, ...], list[torch.Tensor]] = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("AdamW does not support sparse gradients")
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            buckets.setdefault((p.device, p.dtype, state["step"]), []).append(p)
        for (_, _, step), params in buckets.items():
            grads = [p.grad for p in params]
            exp_avgs = [self.state[p]["exp_avg"] for p in params]
            exp_avg_sqs = [self.state[p]["exp_avg_sq"] for p in params]
            torch._foreach_mul_(exp_avgs, beta1)
            torch._foreach_add_(exp_avgs, grads, alpha=1.0 - beta1)
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
            denoms = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_add_(denoms, group["eps"])
            step_size = group["lr"]
            if group["correct_bias"]:
                step_size = step_size * math.sqrt(1.0 - beta2 ** step) / (1.0 - beta1 ** step)
            torch._foreach_addcdiv_(params, exp_avgs, denoms, value=-step_size)
            del denoms
            if group["weight_decay"] > 0.0:
                torch._foreach_add_(params, params, alpha=-group["lr"] * group["weight_decay"])
