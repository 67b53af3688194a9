"""Optimisers and LR schedules of the original: build_optimizer, Noam, step decay, ReduceLROnPlateau wrapper."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

OPTIMS = ("rmsprop", "adagrad", "sgd", "sgdm", "sgdmom", "adam")


def build_optimizer(params, opt: Any, fused: bool = False) -> torch.optim.Optimizer:
    """The optimiser named by --optim with --learning_rate, --optim_alpha/beta/epsilon, --weight_decay.

    `fused` selects torch's fused Adam kernel (the trainer passes it on CUDA); the other optimisers ignore it.
    """
    name, lr, wd = opt.optim, opt.learning_rate, opt.weight_decay
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr, alpha=opt.optim_alpha, eps=opt.optim_epsilon, weight_decay=wd)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr, weight_decay=wd)
    if name == "sgdm":
        return torch.optim.SGD(params, lr, momentum=opt.optim_alpha, weight_decay=wd)
    if name == "sgdmom":
        return torch.optim.SGD(params, lr, momentum=opt.optim_alpha, weight_decay=wd, nesterov=True)
    if name == "adam":
        return torch.optim.Adam(params, lr, (opt.optim_alpha, opt.optim_beta), opt.optim_epsilon, weight_decay=wd,
                                fused=fused or None)
    raise ValueError(f"bad option --optim {name!r}; choose from {OPTIMS}")


def noam_rate(step: int, model_size: int, factor: float, warmup: int) -> float:
    """factor * E^-0.5 * min(step^-0.5, step * warmup^-1.5)."""
    return factor * model_size ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


class NoamOpt:
    """Noam warm-up around Adam(0.9, 0.98, 1e-9); its step is restored from the iteration (spec 9.8, kept)."""

    def __init__(self, model_size: int, factor: float, warmup: int, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self._step = 0
        self.warmup = warmup
        self.factor = factor
        self.model_size = model_size
        self._rate = 0.0

    def step(self, step_fn: Callable[[], Any] | None = None) -> None:
        """Advance the schedule, set the LR on every group, step Adam (through `step_fn`, e.g. a grad scaler's)."""
        self._step += 1
        self._rate = self.rate()
        for group in self.optimizer.param_groups:
            group["lr"] = self._rate
        (step_fn or self.optimizer.step)()

    def rate(self, step: int | None = None) -> float:
        """LR at `step` (default: the current step)."""
        return noam_rate(self._step if step is None else step, self.model_size, self.factor, self.warmup)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear gradients."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @property
    def param_groups(self):
        """The inner optimiser's groups."""
        return self.optimizer.param_groups

    def state_dict(self) -> dict:
        """The inner Adam's state (the step is not saved, as the original)."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Load the inner Adam's state."""
        self.optimizer.load_state_dict(state)


class ReduceLROnPlateau:
    """Optimiser + torch ReduceLROnPlateau(mode='min', factor=0.5, patience=3) stepped at each validation."""

    def __init__(self, optimizer: torch.optim.Optimizer, factor: float = 0.5, patience: int = 3):
        self.optimizer = optimizer
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=factor,
                                                                    patience=patience, threshold=1e-4,
                                                                    threshold_mode="rel", cooldown=0, min_lr=0,
                                                                    eps=1e-8)
        self.current_lr = optimizer.param_groups[0]["lr"]

    def step(self, step_fn: Callable[[], Any] | None = None) -> None:
        """Step the optimiser (through `step_fn`, e.g. a grad scaler's, when given)."""
        (step_fn or self.optimizer.step)()

    def scheduler_step(self, value: float) -> None:
        """Feed one validation value (loss, or -CIDEr)."""
        self.scheduler.step(value)
        self.current_lr = self.optimizer.param_groups[0]["lr"]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear gradients."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @property
    def param_groups(self):
        """The inner optimiser's groups."""
        return self.optimizer.param_groups

    def state_dict(self) -> dict:
        """{current_lr, scheduler_state_dict, optimizer_state_dict} as the original."""
        return {"current_lr": self.current_lr, "scheduler_state_dict": self.scheduler.state_dict(),
                "optimizer_state_dict": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore; a plain optimiser state dict is accepted too."""
        if "optimizer_state_dict" not in state:
            self.optimizer.load_state_dict(state)
            return
        self.current_lr = state["current_lr"]
        self.scheduler.load_state_dict(state["scheduler_state_dict"])
        self.optimizer.load_state_dict(state["optimizer_state_dict"])


def set_lr(optimizer: Any, lr: float) -> None:
    """Set the LR of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def step_decay_lr(opt: Any, epoch: int) -> float:
    """learning_rate * decay_rate ** ((epoch - decay_start) // decay_every) once epoch > decay_start >= 0."""
    if opt.learning_rate_decay_start >= 0 and epoch > opt.learning_rate_decay_start:
        frac = (epoch - opt.learning_rate_decay_start) // opt.learning_rate_decay_every
        return opt.learning_rate * opt.learning_rate_decay_rate ** frac
    return opt.learning_rate


def clip_gradient(optimizer: Any, grad_clip: float) -> None:
    """Clamp every gradient element to [-grad_clip, grad_clip] (by value, spec 9.7); params without grad skipped."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            if param.grad is not None:
                param.grad.data.clamp_(-grad_clip, grad_clip)
