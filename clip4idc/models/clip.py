"""CLIP with the image-pair visual tower (`clip.*` in the original checkpoints)."""
from __future__ import annotations

import math

import torch
from torch import nn

from clip4idc.models.config import ClipConfig
from clip4idc.models.pair_encoder import PairVisualEncoder
from clip4idc.models.text_encoder import TextEncoder

LOGIT_SCALE_MAX = math.log(100.0)


class PairCLIP(nn.Module):
    """Pair visual encoder + text encoder + learned temperature."""

    def __init__(self, cfg: ClipConfig):
        super().__init__()
        self.cfg = cfg
        self.visual = PairVisualEncoder(cfg)
        self.text = TextEncoder(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_pair(self, bef: torch.Tensor, aft: torch.Tensor, return_attention: bool = False):
        """(pooled (B,E), hidden (B,2T,E)) of image pairs; see PairVisualEncoder."""
        return self.visual(bef, aft, return_attention=return_attention)

    def encode_text(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled (B,E), hidden (B,L,E)) of token ids."""
        return self.text(input_ids)

    def initialize_parameters(self) -> None:
        """OpenAI CLIP's initialisation (used when no pretrained CLIP weights are given)."""
        v, t = self.visual, self.text
        nn.init.normal_(t.embeddings.token_embedding.weight, std=0.02)
        nn.init.normal_(t.embeddings.position_embedding.weight, std=0.01)
        for tower, width, layers in ((v, self.cfg.vision_width, v.layers), (t, self.cfg.transformer_width, t.layers)):
            proj_std = width**-0.5 * (2 * len(layers)) ** -0.5
            attn_std, fc_std = width**-0.5, (2 * width) ** -0.5
            for layer in layers:
                for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    nn.init.normal_(lin.weight, std=attn_std)
                    nn.init.zeros_(lin.bias)
                nn.init.normal_(layer.self_attn.out_proj.weight, std=proj_std)
                nn.init.zeros_(layer.self_attn.out_proj.bias)
                nn.init.normal_(layer.mlp.fc1.weight, std=fc_std)
                nn.init.zeros_(layer.mlp.fc1.bias)
                nn.init.normal_(layer.mlp.fc2.weight, std=proj_std)
                nn.init.zeros_(layer.mlp.fc2.bias)
        scale = self.cfg.vision_width**-0.5
        nn.init.normal_(v.embeddings.class_embedding, std=scale)
        nn.init.normal_(v.embeddings.position_embedding.weight, std=scale)
        nn.init.normal_(v.proj.weight, std=scale)
        nn.init.normal_(t.text_projection.weight, std=self.cfg.transformer_width**-0.5)
        nn.init.constant_(self.logit_scale, math.log(1 / 0.07))
        # patch conv: kaiming-uniform default of nn.Conv2d is kept (OpenAI does not re-init it)

    def clamp_logit_scale(self) -> None:
        """Clamp the temperature to <= ln 100 (done after every optimizer step, spec 5.3)."""
        with torch.no_grad():
            self.logit_scale.clamp_(max=LOGIT_SCALE_MAX)
