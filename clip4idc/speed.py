"""Fast paths of CLIP4IDC (issue 15), each behind a flag; the defaults keep this code's fp32 results.

* `--attn_implementation sdpa|eager`: transformers' attention of the CLIP towers and the BERT decoder layers.
  sdpa (default, torch's fused `scaled_dot_product_attention`) equals eager (the original's softmax(QK^T)V)
  up to rounding.
* `--bf16` (CPU or CUDA) / `--fp16` (CUDA, with a gradient scaler): autocast for training, evaluation and
  decoding (the original's flag names; the original's own float16 weights are `--faithful_fp16`).
* `--compile`: `torch.compile` of the pair encoder, the text tower and every decoder layer, in place
  (state_dict keys unchanged; the first steps compile; inductor needs a C++ compiler on CPU).
* BertAdam updates every parameter group with multi-tensor (`torch._foreach_*`) kernels, the same arithmetic
  as the original's per-tensor loop (`BertAdam(foreach=False)`).
* Decoding is KV-cached (clip4idc.decoding).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from transformers import PretrainedConfig

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


def set_attn_implementation(model: nn.Module, impl: str) -> int:
    """Point every transformers layer config of `model` at `impl`; returns how many configs were set."""
    if impl not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attention implementation must be one of {ATTN_IMPLEMENTATIONS}, got {impl!r}")
    configs = {id(c): c for m in model.modules() if isinstance(c := getattr(m, "config", None), PretrainedConfig)}
    for config in configs.values():
        config._attn_implementation = impl
    return len(configs)


def compile_model(model: nn.Module, backend: str = "inductor") -> nn.Module:
    """torch.compile the pair encoder, text encoder and decoder layers of a CLIP4IDC model in place."""
    targets = [model.clip.visual, model.clip.text]
    if model.decoder is not None:
        targets += list(model.decoder.encoder_layers) + list(model.decoder.decoder_layers)
    for module in targets:
        module.compile(backend=backend)
    return model


def autocast_for(device: torch.device | str, fp16: bool = False, bf16: bool = False):
    """torch.autocast for --fp16 (CUDA float16) or --bf16 (bfloat16 on the device), else a no-op context."""
    device = torch.device(device)
    if fp16:
        if device.type != "cuda":
            raise ValueError("float16 autocast needs CUDA; use --bf16 on CPU")
        return torch.autocast("cuda", dtype=torch.float16)
    if bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
