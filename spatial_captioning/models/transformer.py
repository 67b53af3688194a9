"""`TransformerModel`: pre-norm encoder-decoder over region features; `spatial_pe` adds the grid encoding (spec 4.2).

Module names follow the original exactly (`att_embed`, `model.encoder.layers.N.sublayer.K.norm`, ...) so that its
state_dicts load with strict=True.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from spatial_captioning.models.attention import MultiHeadedAttention, XLinearMultiHeadedAttention
from spatial_captioning.models.decoding import CaptionModel, State
from spatial_captioning.models.spatial_encoding import NoPositionalEncoding, SpatialPositionalEncoding

CROSS_ATTN_TYPES = ("xlinear", "dot-product")


def clones(module: nn.Module, n: int) -> nn.ModuleList:
    """Return n deep copies of module."""
    return nn.ModuleList([copy.deepcopy(module) for _ in range(n)])


def subsequent_mask(size: int, device: torch.device | None = None) -> torch.Tensor:
    """Return the (1, size, size) lower-triangular boolean mask (key j visible to query i iff j <= i)."""
    return torch.tril(torch.ones(1, size, size, dtype=torch.bool, device=device))


class RMSNorm(nn.Module):
    """RMSNorm of the original (`--norm RMS`): scale * x / (||x|| * d^-1/2 + eps), no bias."""

    def __init__(self, d: int, eps: float = 1e-8):
        super().__init__()
        self.d = d
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the last dimension."""
        rms = x.norm(2, dim=-1, keepdim=True) * self.d ** -0.5
        return self.scale * x / (rms + self.eps)


def make_norm(kind: str, d: int) -> nn.Module:
    """Return nn.LayerNorm for 'layer' or RMSNorm for 'RMS'."""
    if kind == "layer":
        return nn.LayerNorm(d)
    if kind == "RMS":
        return RMSNorm(d)
    raise ValueError(f"--norm must be 'layer' or 'RMS', got {kind!r}")


class SublayerConnection(nn.Module):
    """Pre-norm residual: x + dropout(sublayer(norm(x)))."""

    def __init__(self, size: int, dropout: float, norm: str):
        super().__init__()
        self.norm = make_norm(norm, size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, sublayer) -> torch.Tensor:
        """Apply the residual block."""
        return x + self.dropout(sublayer(self.norm(x)))


class PositionwiseFeedForward(nn.Module):
    """`fc = Sequential(Linear(E, F), ReLU|GELU, Dropout, Linear(F, E))` (keys fc.0, fc.3)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float, activation: str = "RELU"):
        super().__init__()
        act = {"RELU": nn.ReLU, "GELU": nn.GELU}.get(activation.upper())
        if act is None:
            raise ValueError(f"--ff_activation must be RELU or GELU, got {activation!r}")
        self.fc = nn.Sequential(nn.Linear(d_model, d_ff), act(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the feed-forward block."""
        return self.fc(x)


class EncoderLayer(nn.Module):
    """Self-attention + feed-forward, each in a pre-norm residual."""

    def __init__(self, size: int, self_attn: nn.Module, feed_forward: nn.Module, dropout: float, norm: str):
        super().__init__()
        self.self_attn = self_attn
        self.feed_forward = feed_forward
        self.sublayer = clones(SublayerConnection(size, dropout, norm), 2)
        self.size = size

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encode (N, P, E) regions under mask (N, 1, P)."""
        x = self.sublayer[0](x, lambda y: self.self_attn(y, y, y, mask))
        return self.sublayer[1](x, self.feed_forward)


class Encoder(nn.Module):
    """N encoder layers and a final norm."""

    def __init__(self, layer: nn.Module, n: int, norm: str):
        super().__init__()
        self.layers = clones(layer, n)
        self.norm = make_norm(norm, layer.size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Run every layer, then normalise."""
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention to the (un-normalised) memory, feed-forward."""

    def __init__(self, size: int, self_attn: nn.Module, cross_attn: nn.Module, feed_forward: nn.Module,
                 dropout: float, norm: str):
        super().__init__()
        self.size = size
        self.self_attn = self_attn
        self.cross_attn = cross_attn
        self.feed_forward = feed_forward
        self.sublayer = clones(SublayerConnection(size, dropout, norm), 3)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
                tgt_mask: torch.Tensor) -> torch.Tensor:
        """Decode (N, t, E) word states against memory (N, P, E)."""
        x = self.sublayer[0](x, lambda y: self.self_attn(y, y, y, tgt_mask))
        x = self.sublayer[1](x, lambda y: self.cross_attn(y, memory, memory, src_mask))
        return self.sublayer[2](x, self.feed_forward)


class Decoder(nn.Module):
    """N decoder layers and a final norm."""

    def __init__(self, layer: nn.Module, n: int, norm: str):
        super().__init__()
        self.layers = clones(layer, n)
        self.norm = make_norm(norm, layer.size)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
                tgt_mask: torch.Tensor) -> torch.Tensor:
        """Run every layer, then normalise."""
        for layer in self.layers:
            x = layer(x, memory, src_mask, tgt_mask)
        return self.norm(x)


class Embeddings(nn.Module):
    """Word embedding scaled by sqrt(E) (key `embedding`)."""

    def __init__(self, d_model: int, vocab: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, d_model)
        self.d_model = d_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed token ids."""
        return self.embedding(x) * math.sqrt(self.d_model)


class PositionalEncoding(nn.Module):
    """Sinusoidal word positions (buffer `pe` (1, max_len, E)) followed by dropout."""

    def __init__(self, d_model: int, dropout: float, max_len: int = 5000):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        position = torch.arange(0, max_len, dtype=torch.float32).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Add the position table and apply dropout."""
        return self.dropout(x + self.pe[:, : x.size(1)])


class Generator(nn.Module):
    """Linear(E, V+1) + log_softmax (key `proj`)."""

    def __init__(self, d_model: int, vocab: int):
        super().__init__()
        self.proj = nn.Linear(d_model, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return log-probabilities over the vocabulary (in fp32 also under autocast: the loss and beam scores need it)."""
        return torch.log_softmax(self.proj(x).float(), dim=-1)


class EncoderDecoder(nn.Module):
    """Children in the original registration order: encoder, decoder, src_embed, tgt_embed, generator."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, src_embed: nn.Module, tgt_embed: nn.Module,
                 generator: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.src_embed = src_embed
        self.tgt_embed = tgt_embed
        self.generator = generator

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor, boxes: torch.Tensor | None) -> torch.Tensor:
        """Positional-encode and encode the regions."""
        return self.encoder(self.src_embed(src, boxes), src_mask)

    def decode(self, memory: torch.Tensor, src_mask: torch.Tensor, tgt: torch.Tensor,
               tgt_mask: torch.Tensor) -> torch.Tensor:
        """Decode word ids tgt (N, t) against memory."""
        return self.decoder(self.tgt_embed(tgt), memory, src_mask, tgt_mask)


def _get(opt: Any, name: str, default: Any) -> Any:
    return opt.get(name, default) if isinstance(opt, dict) else getattr(opt, name, default)


class TransformerModel(CaptionModel):
    """The Spatial-Image-Captioning transformer (`spatial_pe` when use_grid, `transformer`/`vanilla` otherwise)."""

    def __init__(self, opt: Any):
        super().__init__()
        self.vocab_size = int(_get(opt, "vocab_size", 0))
        self.seq_length = int(_get(opt, "seq_length", 16))
        self.d_model = int(_get(opt, "input_encoding_size", 512))
        self.img_feat_size = int(_get(opt, "img_feat_size", 2048))
        self.num_layers = int(_get(opt, "num_layers", 1))
        self.ff_size = int(_get(opt, "ff_size", 512))
        self.heads = int(_get(opt, "heads", 8))
        self.dropout = float(_get(opt, "dropout", 0.5))
        self.use_grid = bool(_get(opt, "use_grid", False))
        self.num_grids = int(_get(opt, "num_grids", 576))
        self.enc_pos_embedding = bool(_get(opt, "enc_pos_embedding", True))
        self.enc_pos_type = str(_get(opt, "enc_pos_type", "gxg"))
        self.cross_attn = str(_get(opt, "cross_attn", "xlinear"))
        self.norm = str(_get(opt, "norm", "layer"))
        self.ff_activation = str(_get(opt, "ff_activation", "RELU"))
        self.unk_index = _get(opt, "unk_index", None)
        self.ss_prob = 0.0  # exists in the original but this model ignores it (spec 9.9)
        if self.vocab_size <= 0:
            raise ValueError("vocab_size must be set (from the cocotalk.json vocabulary)")
        if self.cross_attn not in CROSS_ATTN_TYPES:
            raise ValueError(f"--cross_attn must be one of {CROSS_ATTN_TYPES}, got {self.cross_attn!r}")
        p = self.dropout
        self.att_embed = nn.Sequential(nn.Linear(self.img_feat_size, self.d_model), nn.ReLU(), nn.Dropout(p))
        self.model = self._make_model()
        for param in self.model.parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)

    def _make_model(self) -> EncoderDecoder:
        E, p, tgt_vocab = self.d_model, self.dropout, self.vocab_size + 1
        attn = MultiHeadedAttention(self.heads, E, p)
        if self.cross_attn == "dot-product":
            cross = MultiHeadedAttention(self.heads, E, p)
        else:
            cross = XLinearMultiHeadedAttention(1, E, p)  # always 1 head (spec 9.3, kept)
        ff = PositionwiseFeedForward(E, self.ff_size, p, self.ff_activation)
        if self.use_grid:
            src_embed: nn.Module = SpatialPositionalEncoding(self.num_grids, E, p, self.enc_pos_embedding,
                                                             self.enc_pos_type)
        else:
            src_embed = NoPositionalEncoding()
        return EncoderDecoder(
            Encoder(EncoderLayer(E, copy.deepcopy(attn), copy.deepcopy(ff), p, self.norm), self.num_layers, self.norm),
            Decoder(DecoderLayer(E, copy.deepcopy(attn), cross, copy.deepcopy(ff), p, self.norm),
                    self.num_layers, self.norm),
            src_embed,
            nn.Sequential(Embeddings(E, tgt_vocab), PositionalEncoding(E, p)),
            Generator(E, tgt_vocab),
        )

    def prepare_feature(self, img_feats: torch.Tensor, img_masks: torch.Tensor | None,
                        boxes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Clip padding to the longest image, embed valid regions (padded rows exactly 0), masks -> (N, 1, P)."""
        if img_masks is not None:
            p = int(img_masks.sum(1).max())
            img_feats = img_feats[:, :p]
            img_masks = img_masks[:, :p]
            boxes = boxes[:, :p] if boxes is not None else None
            # masking instead of pack_padded_sequence (spec 9.4): numerically identical on valid rows
            att = self.att_embed(img_feats) * img_masks.unsqueeze(-1).to(img_feats.dtype)
        else:
            att = self.att_embed(img_feats)
            img_masks = img_feats.new_ones(img_feats.shape[:2])
        return att, img_masks.unsqueeze(1), boxes

    def encode(self, img_feats: torch.Tensor, img_masks: torch.Tensor | None,
               boxes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (memory (N, P, E), src_mask (N, 1, P))."""
        att, mask, boxes = self.prepare_feature(img_feats, img_masks, boxes)
        return self.model.encode(att, mask, boxes), mask

    @staticmethod
    def target_mask(seq: torch.Tensor) -> torch.Tensor:
        """(N, t) decoder input -> (N, t, t) mask: non-pad keys (column 0 always visible) AND causal (spec 4.1)."""
        keep = seq > 0
        keep[:, 0] = True
        return keep.unsqueeze(-2) & subsequent_mask(seq.size(-1), seq.device)

    def _forward(self, img_feats: torch.Tensor, labels: torch.Tensor, img_masks: torch.Tensor | None = None,
                 boxes: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced log-probs (N, T+1, V+1) for labels (N, T+2)."""
        memory, src_mask = self.encode(img_feats, img_masks, boxes)
        seq = labels[:, :-1]
        out = self.model.decode(memory, src_mask, seq, self.target_mask(seq))
        return self.model.generator(out)

    def init_decode(self, img_feats: torch.Tensor, img_masks: torch.Tensor | None,
                    boxes: torch.Tensor | None) -> State:
        """State = (memory, src_mask, prefix ids (N, 0))."""
        memory, src_mask = self.encode(img_feats, img_masks, boxes)
        ys = torch.zeros(memory.size(0), 0, dtype=torch.long, device=memory.device)
        return memory, src_mask, ys

    def decode_step(self, it: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Append `it` to the prefix and re-run the decoder on it (no KV cache, as the original)."""
        memory, src_mask, ys = state
        ys = torch.cat([ys, it.unsqueeze(1)], dim=1)
        out = self.model.decode(memory, src_mask, ys, subsequent_mask(ys.size(1), ys.device))
        return self.model.generator(out[:, -1]), (memory, src_mask, ys)


