"""Learning-rate schedules: the original's val-loss quirk (default, spec 9.1 K) and a per-epoch cosine."""
from __future__ import annotations

import math
from typing import Any

import torch


class ScheduleMismatch(ValueError):
    """A saved schedule state of the other kind than the one this run uses."""


def legacy_lr(base_lr: float, val_loss: float, t_max: int, eta_min: float = 0.0) -> float:
    """lr after the original's ``scheduler.step(val_loss)``: the loss is taken as the epoch."""
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * val_loss / t_max)) / 2


def cosine_lr(base_lr: float, epoch: int, t_max: int, eta_min: float = 0.0) -> float:
    """CosineAnnealingLR's closed form after ``epoch`` steps."""
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * epoch / t_max)) / 2


def _saved_kind(state: dict[str, Any]) -> str | None:
    # States written before the kind was recorded: CosineAnnealingLR's has "T_max", the legacy one "t_max".
    return state.get("kind") or ("cosine" if "T_max" in state else "legacy" if "t_max" in state else None)


class LegacyValLossCosine:
    """Reproduces CosineAnnealingLR.step(epoch=val_loss) with the closed form, without the deprecated API.

    The lr changes only after a validation. With T_max=60 and losses of 1-3 it stays within 0.6% of its
    base; with short runs (small T_max) it can fall far below it, as in the original.
    """

    kind = "legacy"

    def __init__(self, optimizer: torch.optim.Optimizer, t_max: int, eta_min: float = 0.0):
        self.optimizer = optimizer
        self.t_max = t_max
        self.eta_min = eta_min
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        # Fixed here, as the original's scheduler.base_lrs: a resumed optimizer state does not change them.
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]

    def step_epoch(self) -> None:
        """Nothing happens between validations in the original."""

    def step_validation(self, val_loss: float) -> None:
        """Set every group's lr from the validation loss."""
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = legacy_lr(base, val_loss, self.t_max, self.eta_min)

    def align(self, epoch: int, optimizer_restored: bool) -> None:
        """After resuming at ``epoch`` from an original checkpoint: the lr is the one the original continued
        with, i.e. the restored optimizer's (set by the last validation), or the base lr without one."""
        if not optimizer_restored:
            for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = base

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "t_max": self.t_max, "eta_min": self.eta_min, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if _saved_kind(state) != self.kind:
            raise ScheduleMismatch(f"saved with --lr_schedule {_saved_kind(state)}, this run uses {self.kind}")
        self.t_max, self.eta_min, self.base_lrs = state["t_max"], state["eta_min"], list(state["base_lrs"])


class EpochCosine:
    """CosineAnnealingLR(T_max=num_epochs) stepped once after every training epoch."""

    kind = "cosine"

    def __init__(self, optimizer: torch.optim.Optimizer, t_max: int, eta_min: float = 0.0):
        self.optimizer = optimizer
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=eta_min)

    def step_epoch(self) -> None:
        """Advance one epoch."""
        self.scheduler.step()

    def step_validation(self, val_loss: float) -> None:
        """The validation loss does not drive this schedule."""

    def align(self, epoch: int, optimizer_restored: bool) -> None:
        """Put the schedule at ``epoch`` steps (resuming an original checkpoint, which holds no schedule)."""
        sched = self.scheduler
        sched.last_epoch = epoch
        for group, base in zip(self.optimizer.param_groups, sched.base_lrs):
            group["initial_lr"] = base
            group["lr"] = cosine_lr(base, epoch, sched.T_max, sched.eta_min)
        sched._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if _saved_kind(state) != self.kind:
            raise ScheduleMismatch(f"saved with --lr_schedule {_saved_kind(state)}, this run uses {self.kind}")
        self.scheduler.load_state_dict({k: v for k, v in state.items() if k != "kind"})


def build_schedule(kind: str, optimizer: torch.optim.Optimizer, t_max: int) -> LegacyValLossCosine | EpochCosine:
    """'legacy' (default, the original's) or 'cosine'."""
    if kind == "legacy":
        return LegacyValLossCosine(optimizer, t_max)
    if kind == "cosine":
        return EpochCosine(optimizer, t_max)
    raise ValueError(f"unknown lr schedule {kind!r}")
