"""Image-pair visual encoder (spec 4.3): per-image CLIP blocks, then joint blocks over both images.

Built from transformers' CLIP modules (`CLIPVisionEmbeddings`, `CLIPEncoderLayer`); the pair-specific
parameters (before/after segment vectors, 2T-position joint embedding, `ln_mid`) are added here.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig
from transformers.models.clip.modeling_clip import CLIPEncoderLayer, CLIPVisionEmbeddings

from clip4idc.models.config import ClipConfig


def vision_hf_config(cfg: ClipConfig) -> CLIPVisionConfig:
    """transformers CLIPVisionConfig with the sizes of `cfg` (quick_gelu, LN eps 1e-5 as OpenAI CLIP)."""
    hf = CLIPVisionConfig(
        hidden_size=cfg.vision_width,
        intermediate_size=4 * cfg.vision_width,
        num_attention_heads=cfg.vision_heads,
        num_hidden_layers=cfg.vision_layers,
        image_size=cfg.image_resolution,
        patch_size=cfg.vision_patch_size,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        attention_dropout=0.0,
    )
    hf._attn_implementation = "sdpa"
    return hf


class PairVisualEncoder(nn.Module):
    """Encodes (before, after) image batches into 2T projected tokens and a pooled pair vector."""

    def __init__(self, cfg: ClipConfig):
        super().__init__()
        if not 0 <= cfg.intra_layers <= cfg.vision_layers:
            raise ValueError(f"intra_layers={cfg.intra_layers} must lie in [0, {cfg.vision_layers}]")
        self.cfg = cfg
        width, tokens = cfg.vision_width, cfg.tokens_per_image
        hf = vision_hf_config(cfg)
        scale = width**-0.5
        self.embeddings = CLIPVisionEmbeddings(hf)
        self.pre_layrnorm = nn.LayerNorm(width, eps=1e-5)
        self.layers = nn.ModuleList(CLIPEncoderLayer(hf) for _ in range(cfg.vision_layers))
        self.joint_positional_embedding = nn.Parameter(scale * torch.randn(2 * tokens, width))
        self.bef_embedding = nn.Parameter(scale * torch.randn(width))
        self.aft_embedding = nn.Parameter(scale * torch.randn(width))
        self.ln_mid = nn.LayerNorm(width, eps=1e-5)
        self.post_layernorm = nn.LayerNorm(width, eps=1e-5)
        self.proj = nn.Linear(width, cfg.embed_dim, bias=False)
        if cfg.linear_patch == "3d":
            p = cfg.vision_patch_size
            self.conv2 = nn.Conv3d(3, width, kernel_size=(3, p, p), stride=(1, p, p), padding=(1, 0, 0), bias=False)
        elif cfg.linear_patch != "2d":
            raise ValueError(f"linear_patch must be '2d' or '3d', got {cfg.linear_patch!r}")

    def _patches(self, bef: torch.Tensor, aft: torch.Tensor) -> torch.Tensor:
        """(2B, grid**2, width) patch embeddings, interleaved b0-before, b0-after, b1-before, ..."""
        batch = bef.shape[0]
        if self.cfg.linear_patch == "3d":
            clip = torch.stack([bef, aft], dim=2).to(self.conv2.weight.dtype)  # (B,3,2,H,W)
            x = self.conv2(clip)  # (B,width,2,g,g)
            x = x.permute(0, 2, 1, 3, 4).reshape(2 * batch, x.shape[1], -1)
        else:
            pixels = torch.stack([bef, aft], dim=1).flatten(0, 1)
            weight = self.embeddings.patch_embedding.weight
            x = self.embeddings.patch_embedding(pixels.to(weight.dtype)).flatten(2)
        return x.transpose(1, 2)

    def forward(self, bef: torch.Tensor, aft: torch.Tensor, return_attention: bool = False):
        """Return (pooled (B,E), hidden (B,2T,E)) and, if asked, the last layer's CLS attention (B,2T)."""
        batch, tokens = bef.shape[0], self.cfg.tokens_per_image
        x = self._patches(bef, aft)
        cls = self.embeddings.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.embeddings.position_embedding.weight.to(x.dtype)
        x = self.pre_layrnorm(x)
        for layer in self.layers[: self.cfg.intra_layers]:
            x = layer(x, None)
        x = x.view(batch, 2, tokens, -1)
        x = torch.cat([x[:, 0] + self.bef_embedding.to(x.dtype), x[:, 1] + self.aft_embedding.to(x.dtype)], dim=1)
        x = self.ln_mid(x + self.joint_positional_embedding.to(x.dtype))
        attention = None
        joint = self.layers[self.cfg.intra_layers :]
        for i, layer in enumerate(joint):
            if return_attention and i == len(joint) - 1:
                attention = cls_attention(layer, x)
            x = layer(x, None)
        hidden = self.proj(self.post_layernorm(x).to(self.proj.weight.dtype))
        # Spec 9.2 fix: the second CLS sits at grid**2 + 1 (the original hard-codes 50).
        pooled = (hidden[:, 0] + hidden[:, tokens]) / 2
        if return_attention:
            return pooled, hidden, attention
        return pooled, hidden


def cls_attention(layer: CLIPEncoderLayer, x: torch.Tensor) -> torch.Tensor:
    """Head-averaged attention of token 0 over all tokens in `layer` for input `x` -> (B, N)."""
    attn = layer.self_attn
    h = layer.layer_norm1(x)
    b, n, _ = h.shape
    q = attn.q_proj(h[:, :1]).view(b, 1, attn.num_heads, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(h).view(b, n, attn.num_heads, attn.head_dim).transpose(1, 2)
    weights = torch.softmax((q @ k.transpose(-1, -2)) * attn.scale, dim=-1)
    return weights.mean(dim=1)[:, 0]
