"""BertAdam with the original's semantics (spec 5.2, kept per 9.10), parameter groups and freezing (5.4).

Group and freezing rules are applied to the ORIGINAL parameter names (`convert.original_param_name`),
so e.g. CLIP's `ln_*` weights are decayed and the decoder's `LayerNorm` ones are not, exactly as in the
original recipe.
"""
from __future__ import annotations

import math
import re

import torch
from torch.nn.utils import clip_grad_norm_
from torch.optim import Optimizer

from clip4idc.convert import _original_name


def warmup_linear(x: float, warmup: float = 0.002) -> float:
    """x/warmup during warmup, then linear decay to 0 at x=1."""
    if x < warmup:
        return x / warmup
    return max((x - 1.0) / (warmup - 1.0), 0.0)


def warmup_cosine(x: float, warmup: float = 0.002) -> float:
    """x/warmup during warmup, then 0.5(1+cos(pi x)) (not renormalised after warmup)."""
    if x < warmup:
        return x / warmup
    return 0.5 * (1.0 + math.cos(math.pi * x))


def warmup_constant(x: float, warmup: float = 0.002) -> float:
    """x/warmup during warmup, then 1."""
    return x / warmup if x < warmup else 1.0


SCHEDULES = {"warmup_linear": warmup_linear, "warmup_cosine": warmup_cosine, "warmup_constant": warmup_constant}


FOREACH_CHUNK = 1 << 24  # elements per multi-tensor update (4 temporaries of 64 MiB at float32)


class BertAdam(Optimizer):
    """Adam without bias correction, decoupled weight decay added to the update, per-tensor grad clipping
    and a scheduled LR computed from each tensor's own step count (first update has LR 0).

    `foreach=True` (default, issue 15) updates a group's tensors with multi-tensor `torch._foreach_*` kernels,
    operation for operation the original's per-tensor loop (`foreach=False`), so the results are the same; a
    group holding float16 tensors (--faithful_fp16) keeps the loop, whose half-precision rounding it reproduces.
    torch's fused AdamW is not used: it bias-corrects and clips differently, which would change training."""

    def __init__(self, params, lr: float, warmup: float = -1, t_total: int = -1, schedule: str = "warmup_linear",
                 b1: float = 0.9, b2: float = 0.999, e: float = 1e-6, weight_decay: float = 0.01,
                 max_grad_norm: float = 1.0, foreach: bool = True):
        if schedule not in SCHEDULES:
            raise ValueError(f"invalid schedule {schedule!r}")
        defaults = dict(lr=lr, schedule=schedule, warmup=warmup, t_total=t_total, b1=b1, b2=b2, e=e,
                        weight_decay=weight_decay, max_grad_norm=max_grad_norm)
        super().__init__(params, defaults)
        self.foreach = foreach

    @staticmethod
    def scheduled_lr(group: dict, step: int) -> float:
        """LR of `group` at a tensor's pre-increment `step`."""
        if group["t_total"] == -1:
            return group["lr"]
        return group["lr"] * SCHEDULES[group["schedule"]](step / group["t_total"], group["warmup"])

    def get_lr(self) -> list[float]:
        """Scheduled LRs of tensors that have a grad ([0] if one has no state yet), as the original."""
        lrs = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    return [0]
                lrs.append(self.scheduled_lr(group, state["step"]))
        return lrs

    def schedule_lrs(self) -> list[float]:
        """Scheduled LR of every group at its current step (for logging; spec 9.9 fix)."""
        out = []
        for group in self.param_groups:
            steps = [self.state[p]["step"] for p in group["params"] if len(self.state[p])]
            out.append(self.scheduled_lr(group, max(steps) if steps else 0))
        return out

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every tensor that has a grad."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            if self.foreach and all(p.dtype == torch.float32 for p in group["params"]):
                self._foreach_group(group)
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["next_m"] = torch.zeros_like(p)
                    state["next_v"] = torch.zeros_like(p)
                if group["max_grad_norm"] > 0:
                    clip_grad_norm_(p, group["max_grad_norm"])
                grad = p.grad
                m, v = state["next_m"], state["next_v"]
                m.mul_(group["b1"]).add_(grad, alpha=1 - group["b1"])
                v.mul_(group["b2"]).addcmul_(grad, grad, value=1 - group["b2"])
                update = m / (v.sqrt() + group["e"])
                if group["weight_decay"] > 0.0:
                    update = update + group["weight_decay"] * p
                p.add_(-self.scheduled_lr(group, state["step"]) * update)
                state["step"] += 1
        return loss

    def _foreach_group(self, group: dict) -> None:
        """The loop's update for every tensor of `group` that has a grad, as multi-tensor kernels over chunks of
        at most FOREACH_CHUNK elements (the kernels' temporaries stay small)."""
        chunk, size = [], 0
        for p in group["params"]:
            if p.grad is None:
                continue
            if chunk and size + p.numel() > FOREACH_CHUNK:
                self._foreach_update(group, chunk)
                chunk, size = [], 0
            chunk.append(p)
            size += p.numel()
        if chunk:
            self._foreach_update(group, chunk)

    def _foreach_update(self, group: dict, params: list[torch.Tensor]) -> None:
        for p in params:
            state = self.state[p]
            if len(state) == 0:
                state["step"] = 0
                state["next_m"] = torch.zeros_like(p)
                state["next_v"] = torch.zeros_like(p)
        states = [self.state[p] for p in params]
        grads = [p.grad for p in params]
        if group["max_grad_norm"] > 0:  # clip_grad_norm_ of each tensor on its own
            norms = torch.stack(torch._foreach_norm(grads))
            torch._foreach_mul_(grads, list((group["max_grad_norm"] / (norms + 1e-6)).clamp(max=1.0).unbind()))
        ms, vs = [s["next_m"] for s in states], [s["next_v"] for s in states]
        torch._foreach_mul_(ms, group["b1"])
        torch._foreach_add_(ms, grads, alpha=1 - group["b1"])
        torch._foreach_mul_(vs, group["b2"])
        torch._foreach_addcmul_(vs, grads, grads, value=1 - group["b2"])
        denom = torch._foreach_sqrt(vs)
        torch._foreach_add_(denom, group["e"])
        updates = torch._foreach_div(ms, denom)
        if group["weight_decay"] > 0.0:
            torch._foreach_add_(updates, torch._foreach_mul(params, group["weight_decay"]))
        torch._foreach_mul_(updates, [-self.scheduled_lr(group, s["step"]) for s in states])
        torch._foreach_add_(params, updates)
        for s in states:
            s["step"] += 1


NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")
PAIR_PARAMS = ("clip.visual.ln_mid", "clip.visual.joint_positional_embedding", "clip.visual.bef_embedding",
               "clip.visual.aft_embedding")


def original_param_name(name: str) -> str:
    """Original CLIP4IDC name of one of this model's parameters (q/k/v map to `attn.in_proj_*`)."""
    m = re.match(r"(clip\.(?:text|visual)\.layers\.\d+)\.self_attn\.[qkv]_proj\.(weight|bias)$", name)
    if m:
        return _original_name(m.group(1) + ".") + f"attn.in_proj_{m.group(2)}"
    if name == "clip.text.text_projection.weight":
        return "clip.text_projection"
    if name == "clip.visual.proj.weight":
        return "clip.visual.proj"
    return _original_name(name)


def param_groups(model: torch.nn.Module, stage: str, lr: float, coef_lr: float, weight_decay: float) -> list[dict]:
    """The four groups of spec 5.2 (decay/no-decay x CLIP/new) over trainable parameters."""
    groups = {key: [] for key in ("decay_clip", "decay_new", "nodecay_clip", "nodecay_new")}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        orig = original_param_name(name)
        decay = not any(nd in orig for nd in NO_DECAY)
        is_clip = "clip." in orig
        if stage == "retrieval" and any(orig.startswith(x) for x in PAIR_PARAMS):
            is_clip = False
        groups[("decay_" if decay else "nodecay_") + ("clip" if is_clip else "new")].append(p)
    return [
        {"params": groups["decay_clip"], "weight_decay": weight_decay, "lr": lr * coef_lr},
        {"params": groups["decay_new"], "weight_decay": weight_decay},
        {"params": groups["nodecay_clip"], "weight_decay": 0.0, "lr": lr * coef_lr},
        {"params": groups["nodecay_new"], "weight_decay": 0.0},
    ]


ALWAYS_TRAINABLE = ("ln_final.", "text_projection", "logit_scale", "visual.ln_post.", "visual.proj",
                    "visual.bef_embedding", "visual.aft_embedding", "visual.joint_positional_embedding",
                    "visual.ln_mid")


def freeze_layers(model: torch.nn.Module, freeze_layer_num: int, stage: str, datatype: str,
                  linear_patch: str = "2d") -> list[str]:
    """Apply `--freeze_layer_num` (spec 5.4); returns the frozen original names (clip-relative).

    Kept quirks: freezing `token_embedding`/`positional_embedding` also freezes the decoder's tied
    word/position embeddings and output projection (spec 9.11); with `--linear_patch 3d` the original's
    inverted `str.find` test leaves every parameter trainable.
    """
    if freeze_layer_num <= -1:
        return []
    if not -1 <= freeze_layer_num <= 12:
        raise ValueError("--freeze_layer_num must lie in [-1, 12]")
    frozen = []
    for name, p in model.clip.named_parameters():
        orig = original_param_name("clip." + name)[len("clip."):]
        if orig.startswith(ALWAYS_TRAINABLE):
            continue
        if stage == "caption" and datatype == "spot" and orig.startswith("token_embedding."):
            continue
        m = re.match(r"(?:visual\.)?transformer\.resblocks\.(\d+)\.", orig)
        if m and int(m.group(1)) >= freeze_layer_num:
            continue
        if linear_patch == "3d":
            continue
        p.requires_grad_(False)
        if orig not in frozen:
            frozen.append(orig)
    return frozen


def build_optimizer(model: torch.nn.Module, stage: str, lr: float, coef_lr: float, t_total: int,
                    warmup_proportion: float, foreach: bool = True) -> BertAdam:
    """BertAdam with the stage's recipe: retrieval cosine/b2 0.98/wd 0.2, caption linear/b2 0.999/wd 0.01."""
    if stage == "retrieval":
        groups = param_groups(model, stage, lr, coef_lr, 0.2)
        return BertAdam(groups, lr=lr, warmup=warmup_proportion, schedule="warmup_cosine", b1=0.9, b2=0.98,
                        e=1e-6, t_total=t_total, weight_decay=0.2, max_grad_norm=1.0, foreach=foreach)
    groups = param_groups(model, stage, lr, coef_lr, 0.01)
    return BertAdam(groups, lr=lr, warmup=warmup_proportion, schedule="warmup_linear", b1=0.9, b2=0.999,
                    e=1e-6, t_total=t_total, weight_decay=0.01, max_grad_norm=1.0, foreach=foreach)
