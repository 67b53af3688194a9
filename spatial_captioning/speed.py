"""Fast paths of training and decoding, each behind a flag and off by default (issue 15).

* `--attn_impl sdpa`: every dot-product attention (the transformer's and ORT's box attention, whose geometry
  weights enter as the additive mask log(w_g)) runs `torch.nn.functional.scaled_dot_product_attention`.
* `--amp bf16|fp16`: autocast for the XE step, the SCST step (sampling and greedy baseline included) and
  decoding in eval.py; fp16 uses a gradient scaler. X-Linear attention keeps its exact formula (its GroupNorm
  runs in fp32 under autocast, as torch's autocast policy says).
* `--compile`: `torch.compile` of the encoder and decoder stacks (in place: state_dict keys unchanged).
* On CUDA, Adam is the fused implementation (`build_optimizer(..., fused=True)`).
"""
from __future__ import annotations

import argparse
import contextlib
from typing import Any

import torch
from torch import nn

from spatial_captioning.models.attention import ATTN_IMPLS, set_attention_impl

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def add_speed_args(p: argparse.ArgumentParser) -> None:
    """--attn_impl, --amp, --compile (off by default: the original's eager fp32 path)."""
    g = p.add_argument_group("speed (see README 'Speed')")
    g.add_argument("--attn_impl", type=str, default="eager", choices=list(ATTN_IMPLS),
                   help="eager: the original's attention formula; sdpa: torch's scaled_dot_product_attention "
                        "(fused kernels; equal up to rounding)")
    g.add_argument("--amp", type=str, default="none", choices=list(AMP_DTYPES),
                   help="autocast dtype for training (XE and SCST, sampling included) and decoding; fp16 adds a "
                        "gradient scaler (none: fp32 as the original)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the encoder and decoder stacks (first steps compile; needs a C++ compiler "
                        "on CPU)")


def autocast(device: torch.device | str, amp: str) -> contextlib.AbstractContextManager:
    """torch.autocast for `amp` on `device` (a no-op context for `none`)."""
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def grad_scaler(device: torch.device | str, amp: str) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 training, None otherwise (bf16 and fp32 need none)."""
    if amp != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def compile_model(model: nn.Module, backend: str = "inductor") -> nn.Module:
    """torch.compile the encoder and decoder stacks of a transformer captioner in place; returns the model."""
    core = getattr(model, "model", None)
    targets = [getattr(core, name) for name in ("encoder", "decoder") if isinstance(getattr(core, name, None), nn.Module)]
    if not targets:
        raise ValueError(f"--compile is implemented for the transformer models, not {type(model).__name__}")
    for module in targets:
        module.compile(backend=backend)
    return model


def apply_speed_options(model: nn.Module, opt: Any) -> nn.Module:
    """Set the attention implementation and compile when asked; returns the model."""
    set_attention_impl(model, getattr(opt, "attn_impl", "eager"))
    if getattr(opt, "compile", False):
        compile_model(model)
    return model
