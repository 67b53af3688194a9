"""CLIP text encoder (spec 4.4) from transformers' CLIP modules: causal blocks, EOT pooling."""
from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPTextConfig
from transformers.models.clip.modeling_clip import CLIPEncoderLayer, CLIPTextEmbeddings

from clip4idc.models.config import ClipConfig


def text_hf_config(cfg: ClipConfig) -> CLIPTextConfig:
    """transformers CLIPTextConfig with the sizes of `cfg`."""
    hf = CLIPTextConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.transformer_width,
        intermediate_size=4 * cfg.transformer_width,
        num_attention_heads=cfg.transformer_heads,
        num_hidden_layers=cfg.transformer_layers,
        max_position_embeddings=cfg.context_length,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        attention_dropout=0.0,
    )
    hf._attn_implementation = "sdpa"
    return hf


class TextEncoder(nn.Module):
    """Token ids (B,L) -> (pooled at the EOT position (B,E), projected hidden states (B,L,E))."""

    def __init__(self, cfg: ClipConfig):
        super().__init__()
        hf = text_hf_config(cfg)
        self.embeddings = CLIPTextEmbeddings(hf)
        self.layers = nn.ModuleList(CLIPEncoderLayer(hf) for _ in range(cfg.transformer_layers))
        self.final_layer_norm = nn.LayerNorm(cfg.transformer_width, eps=1e-5)
        self.text_projection = nn.Linear(cfg.transformer_width, cfg.embed_dim, bias=False)

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (pooled, hidden); pooling picks argmax(ids), i.e. the EOT token (largest id)."""
        length = input_ids.shape[1]
        # cast to the blocks' dtype (float16 in the --faithful_fp16 mode, as the original's `.type(self.dtype)`)
        x = self.embeddings(input_ids=input_ids).to(self.text_projection.weight.dtype)
        mask = torch.full((length, length), float("-inf"), device=x.device, dtype=x.dtype).triu(1)
        mask = mask[None, None]
        for layer in self.layers:
            x = layer(x, mask)
        hidden = self.text_projection(self.final_layer_norm(x).to(self.text_projection.weight.dtype))
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), input_ids.argmax(dim=-1)]
        return pooled, hidden
