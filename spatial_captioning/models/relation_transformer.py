"""Object Relation Transformer (Herdade et al. 2019): box-geometry encoder attention; the baseline of spec 4.9.

Key names follow ORT's released checkpoints (`a_2/b_2` norms, `w_1/w_2`, `lut`, `src_attn`, `WGs`).
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spatial_captioning.models.attention import MultiHeadedAttention, mask_value
from spatial_captioning.models.decoding import CaptionModel, State
from spatial_captioning.models.transformer import (Generator, PositionalEncoding, _get, clones, subsequent_mask,
                                                   TransformerModel)


class LayerNorm(nn.Module):
    """ORT's LayerNorm: a_2 * (x - mean) / (unbiased std + eps) + b_2 (spec 9.19, kept)."""

    def __init__(self, features: int, eps: float = 1e-6):
        super().__init__()
        self.a_2 = nn.Parameter(torch.ones(features))
        self.b_2 = nn.Parameter(torch.zeros(features))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the last dimension."""
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.a_2 * (x - mean) / (std + self.eps) + self.b_2


class SublayerConnection(nn.Module):
    """Pre-norm residual with ORT's LayerNorm."""

    def __init__(self, size: int, dropout: float):
        super().__init__()
        self.norm = LayerNorm(size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, sublayer) -> torch.Tensor:
        """Apply the residual block."""
        return x + self.dropout(sublayer(self.norm(x)))


class PositionwiseFeedForward(nn.Module):
    """w_2(dropout(relu(w_1(x))))."""

    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.w_1 = nn.Linear(d_model, d_ff)
        self.w_2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the feed-forward block."""
        return self.w_2(self.dropout(torch.relu(self.w_1(x))))


def box_relational_embedding(boxes: torch.Tensor, dim_g: int = 64, wave_len: float = 1000.0,
                             trignometric_embedding: bool = True) -> torch.Tensor:
    """Pairwise box geometry (N, P, P, dim_g) from relative [x1, y1, x2, y2] boxes (N, P, 4); the +1 on w/h is ORT's."""
    n = boxes.size(0)
    x_min, y_min, x_max, y_max = torch.chunk(boxes, 4, dim=-1)
    cx = (x_min + x_max) * 0.5
    cy = (y_min + y_max) * 0.5
    w = (x_max - x_min) + 1.0
    h = (y_max - y_min) + 1.0
    delta_x = torch.log(torch.clamp(torch.abs((cx - cx.view(n, 1, -1)) / w), min=1e-3))
    delta_y = torch.log(torch.clamp(torch.abs((cy - cy.view(n, 1, -1)) / h), min=1e-3))
    delta_w = torch.log(w / w.view(n, 1, -1))
    delta_h = torch.log(h / h.view(n, 1, -1))
    position = torch.stack((delta_x, delta_y, delta_w, delta_h), -1)  # (N, P, P, 4)
    if not trignometric_embedding:
        return position
    feat_range = torch.arange(dim_g // 8, device=boxes.device, dtype=boxes.dtype)  # no hard-coded .cuda() (spec 9.18)
    dim_mat = 1.0 / torch.pow(wave_len, feat_range / (dim_g / 8))
    mul = (100.0 * position.unsqueeze(-1) * dim_mat).flatten(-2)  # (N, P, P, 32)
    return torch.cat((torch.sin(mul), torch.cos(mul)), -1)


class BoxMultiHeadedAttention(nn.Module):
    """Self-attention whose weights are multiplied by ReLU(W_G * geometry) (one Linear(dim_g, 1) per head)."""

    def __init__(self, heads: int, d_model: int, trignometric_embedding: bool = True,
                 legacy_extra_skip: bool = False, dropout: float = 0.1):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.trignometric_embedding = trignometric_embedding
        self.legacy_extra_skip = legacy_extra_skip
        self.h = heads
        self.d_k = d_model // heads
        self.dim_g = 64 if trignometric_embedding else 4
        self.linears = clones(nn.Linear(d_model, d_model), 4)
        self.WGs = clones(nn.Linear(self.dim_g, 1, bias=True), 8)  # 8 hard-coded in ORT
        self.dropout = nn.Dropout(p=dropout)
        self.attn_impl = "eager"

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, boxes: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Geometry-weighted attention over regions."""
        if mask is not None:
            mask = mask.unsqueeze(1)
        n = query.size(0)
        geometry = box_relational_embedding(boxes, trignometric_embedding=self.trignometric_embedding)
        q, k, v = [lin(x).view(n, -1, self.h, self.d_k).transpose(1, 2)
                   for lin, x in zip(self.linears, (query, key, value))]
        w_g = torch.relu(torch.cat([wg(geometry).permute(0, 3, 1, 2) for wg in self.WGs], 1))  # (N, 8, P, P)
        log_g = torch.log(torch.clamp(w_g, min=1e-6))
        if self.attn_impl == "sdpa":
            # ORT's softmax(log(w_g) + masked scores) as an additive mask: log(w_g), -1e9 on padded keys
            bias = log_g.to(q.dtype)
            if mask is not None:
                bias = bias.masked_fill(mask == 0, mask_value(bias.dtype))
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                               dropout_p=self.dropout.p if self.training else 0.0)
        else:
            scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.d_k)
            if mask is not None:
                scores = scores.masked_fill(mask == 0, mask_value(scores.dtype))
            weights = torch.softmax(log_g + scores, dim=-1)
            x = torch.matmul(self.dropout(weights), v)
        x = x.transpose(1, 2).contiguous().view(n, -1, self.h * self.d_k)
        if self.legacy_extra_skip:
            x = value + x
        return self.linears[-1](x)


class EncoderLayer(nn.Module):
    """Box self-attention + feed-forward."""

    def __init__(self, size: int, self_attn: nn.Module, feed_forward: nn.Module, dropout: float):
        super().__init__()
        self.self_attn = self_attn
        self.feed_forward = feed_forward
        self.sublayer = clones(SublayerConnection(size, dropout), 2)
        self.size = size

    def forward(self, x: torch.Tensor, boxes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encode regions with their boxes."""
        x = self.sublayer[0](x, lambda y: self.self_attn(y, y, y, boxes, mask))
        return self.sublayer[1](x, self.feed_forward)


class Encoder(nn.Module):
    """N box-attention layers and a final ORT LayerNorm."""

    def __init__(self, layer: nn.Module, n: int):
        super().__init__()
        self.layers = clones(layer, n)
        self.norm = LayerNorm(layer.size)

    def forward(self, x: torch.Tensor, boxes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Run every layer, then normalise."""
        for layer in self.layers:
            x = layer(x, boxes, mask)
        return self.norm(x)


class DecoderLayer(nn.Module):
    """Self-attention, `src_attn` to memory, feed-forward."""

    def __init__(self, size: int, self_attn: nn.Module, src_attn: nn.Module, feed_forward: nn.Module,
                 dropout: float):
        super().__init__()
        self.size = size
        self.self_attn = self_attn
        self.src_attn = src_attn
        self.feed_forward = feed_forward
        self.sublayer = clones(SublayerConnection(size, dropout), 3)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
                tgt_mask: torch.Tensor) -> torch.Tensor:
        """Decode against memory."""
        x = self.sublayer[0](x, lambda y: self.self_attn(y, y, y, tgt_mask))
        x = self.sublayer[1](x, lambda y: self.src_attn(y, memory, memory, src_mask))
        return self.sublayer[2](x, self.feed_forward)


class Decoder(nn.Module):
    """N decoder layers and a final ORT LayerNorm."""

    def __init__(self, layer: nn.Module, n: int):
        super().__init__()
        self.layers = clones(layer, n)
        self.norm = LayerNorm(layer.size)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
                tgt_mask: torch.Tensor) -> torch.Tensor:
        """Run every layer, then normalise."""
        for layer in self.layers:
            x = layer(x, memory, src_mask, tgt_mask)
        return self.norm(x)


class Embeddings(nn.Module):
    """Word embedding scaled by sqrt(E) (key `lut`)."""

    def __init__(self, d_model: int, vocab: int):
        super().__init__()
        self.lut = nn.Embedding(vocab, d_model)
        self.d_model = d_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed token ids."""
        return self.lut(x) * math.sqrt(self.d_model)


class EncoderDecoder(nn.Module):
    """ORT's EncoderDecoder; src_embed is the identity."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, tgt_embed: nn.Module, generator: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.src_embed = nn.Identity()
        self.tgt_embed = tgt_embed
        self.generator = generator

    def encode(self, src: torch.Tensor, boxes: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """Encode regions with geometry."""
        return self.encoder(self.src_embed(src), boxes, src_mask)

    def decode(self, memory: torch.Tensor, src_mask: torch.Tensor, tgt: torch.Tensor,
               tgt_mask: torch.Tensor) -> torch.Tensor:
        """Decode word ids against memory."""
        return self.decoder(self.tgt_embed(tgt), memory, src_mask, tgt_mask)


class RelationTransformerModel(CaptionModel):
    """ORT RelationTransformerModel (`--caption_model ort`); needs relative boxes (`--use_box 1`)."""

    def __init__(self, opt: Any):
        super().__init__()
        self.vocab_size = int(_get(opt, "vocab_size", 0))
        self.seq_length = int(_get(opt, "seq_length", 16))
        self.d_model = int(_get(opt, "input_encoding_size", 512))
        self.img_feat_size = int(_get(opt, "img_feat_size", 2048))
        self.num_layers = int(_get(opt, "num_layers", 6))
        self.ff_size = int(_get(opt, "ff_size", 2048))
        self.heads = int(_get(opt, "heads", 8))
        self.drop_prob_lm = float(_get(opt, "dropout", 0.5))
        self.unk_index = _get(opt, "unk_index", None)
        self.ss_prob = 0.0
        trig = bool(_get(opt, "box_trignometric_embedding", True))
        legacy = bool(_get(opt, "legacy_extra_skip", False))
        if self.vocab_size <= 0:
            raise ValueError("vocab_size must be set (from the cocotalk.json vocabulary)")
        if self.heads != 8:
            raise ValueError(f"the ort model has 8 geometry heads hard-coded (WGs); --heads must be 8, got {self.heads}")
        E, p, tgt_vocab = self.d_model, 0.1, self.vocab_size + 1  # ORT's transformer dropout is a hard 0.1
        self.att_embed = nn.Sequential(nn.Linear(self.img_feat_size, E), nn.ReLU(), nn.Dropout(self.drop_prob_lm))
        attn = MultiHeadedAttention(self.heads, E, p)
        box_attn = BoxMultiHeadedAttention(self.heads, E, trig, legacy, p)
        ff = PositionwiseFeedForward(E, self.ff_size, p)
        self.model = EncoderDecoder(
            Encoder(EncoderLayer(E, box_attn, copy.deepcopy(ff), p), self.num_layers),
            Decoder(DecoderLayer(E, copy.deepcopy(attn), copy.deepcopy(attn), copy.deepcopy(ff), p), self.num_layers),
            nn.Sequential(Embeddings(E, tgt_vocab), PositionalEncoding(E, p)),
            Generator(E, tgt_vocab),
        )
        for param in self.model.parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)

    prepare_feature = TransformerModel.prepare_feature
    target_mask = staticmethod(TransformerModel.target_mask)

    def encode(self, img_feats: torch.Tensor, img_masks: torch.Tensor | None,
               boxes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (memory, src_mask)."""
        if boxes is None:
            raise ValueError("the Object Relation Transformer needs relative boxes (--use_box 1 --input_rel_box_dir)")
        att, mask, boxes = self.prepare_feature(img_feats, img_masks, boxes)
        return self.model.encode(att, boxes, mask), mask

    def _forward(self, img_feats: torch.Tensor, labels: torch.Tensor, img_masks: torch.Tensor | None = None,
                 boxes: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced log-probs (N, T+1, V+1)."""
        memory, src_mask = self.encode(img_feats, img_masks, boxes)
        seq = labels[:, :-1]
        return self.model.generator(self.model.decode(memory, src_mask, seq, self.target_mask(seq)))

    def init_decode(self, img_feats: torch.Tensor, img_masks: torch.Tensor | None,
                    boxes: torch.Tensor | None) -> State:
        """State = (memory, src_mask, prefix ids)."""
        memory, src_mask = self.encode(img_feats, img_masks, boxes)
        return memory, src_mask, torch.zeros(memory.size(0), 0, dtype=torch.long, device=memory.device)

    def decode_step(self, it: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Re-run the decoder on the grown prefix."""
        memory, src_mask, ys = state
        ys = torch.cat([ys, it.unsqueeze(1)], dim=1)
        out = self.model.decode(memory, src_mask, ys, subsequent_mask(ys.size(1), ys.device))
        return self.model.generator(out[:, -1]), (memory, src_mask, ys)
