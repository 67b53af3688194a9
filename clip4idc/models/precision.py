"""The original's precision layout (spec 5.6, kept as an option per 9.1): CLIP's Linear / Conv weights and
biases and both projections in float16, everything else (embeddings, LayerNorms, logit_scale, the new
pair parameters, the decoder) in float32; BertAdam then keeps float16 moments for those tensors."""
from __future__ import annotations

import torch
from torch import nn


def convert_weights_fp16(model: nn.Module) -> int:
    """Cast the CLIP Linear/Conv tensors of `model.clip` to float16 in place; returns how many tensors."""
    count = 0
    for module in model.clip.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv3d)):
            for param in (module.weight, module.bias):
                if param is not None:
                    param.data = param.data.half()
                    count += 1
    return count


def is_faithful_fp16(model: nn.Module) -> bool:
    """True when the CLIP projections are float16 (the original's layout)."""
    return model.clip.visual.proj.weight.dtype == torch.float16
