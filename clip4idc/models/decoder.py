"""UniVL-style caption decoder (spec 4.6) from transformers' BERT layers.

`encoder_layers` run self-attention over the visual tokens; decoder layer i uses masked self-attention
on the caption, then cross-attention to the output of encoder layer i (layer-wise pairing). Word and
position embeddings and the output projection are CLIP's token/position embeddings, passed in at call
time so the tie is structural (spec 6: the original saves the tied tensors under three names).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertLayer, BertPredictionHeadTransform

from clip4idc.models.config import DecoderConfig

MASK_VALUE = -10000.0  # the original's additive mask value


def bert_config(cfg: DecoderConfig, cross: bool) -> BertConfig:
    """BertConfig for the decoder (cross=True) or visual-encoder (cross=False) layers."""
    hf = BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_attention_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        hidden_act=cfg.hidden_act,
        hidden_dropout_prob=cfg.hidden_dropout_prob,
        attention_probs_dropout_prob=cfg.attention_probs_dropout_prob,
        layer_norm_eps=1e-12,
        is_decoder=cross,
        add_cross_attention=cross,
    )
    hf._attn_implementation = "sdpa"
    return hf


class CaptionDecoder(nn.Module):
    """Visual tokens (B,N,H) + caption prefix ids (B,L) -> vocabulary logits (B,L,V)."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        enc_cfg, dec_cfg = bert_config(cfg, cross=False), bert_config(cfg, cross=True)
        self.embeddings_norm = nn.LayerNorm(cfg.hidden_size, eps=1e-12)
        self.embeddings_dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.encoder_layers = nn.ModuleList(BertLayer(copy.deepcopy(enc_cfg)) for _ in range(cfg.num_decoder_layers))
        self.decoder_layers = nn.ModuleList(BertLayer(dec_cfg, layer_idx=i) for i in range(cfg.num_decoder_layers))
        self.head_transform = BertPredictionHeadTransform(dec_cfg)
        self.head_bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def encode_visual(self, visual_hidden: torch.Tensor, visual_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Outputs of every visual self-attention layer (the decoder pairs layer i with output i)."""
        mask = None
        if visual_mask is not None:
            mask = (1.0 - visual_mask[:, None, None, :].to(visual_hidden.dtype)) * MASK_VALUE
        outputs, x = [], visual_hidden
        for layer in self.encoder_layers:
            x = layer(x, mask)
            outputs.append(x)
        return outputs

    def forward(
        self,
        input_ids: torch.Tensor,
        encoder_outputs: list[torch.Tensor],
        word_weight: torch.Tensor,
        position_weight: torch.Tensor,
        decoder_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B,L,V) for every prefix position, or (N,V) for the boolean `positions` (B,L) only;
        `decoder_mask` (B,L) marks real tokens (None = all)."""
        batch, length = input_ids.shape
        x = F.embedding(input_ids, word_weight) + position_weight[:length].to(word_weight.dtype)
        x = self.embeddings_dropout(self.embeddings_norm(x.float()))
        allowed = torch.ones(length, length, device=x.device).tril()[None]
        if decoder_mask is not None:
            allowed = allowed * decoder_mask[:, None, :].to(x.dtype)
        self_mask = ((1.0 - allowed) * MASK_VALUE)[:, None]
        for layer, memory in zip(self.decoder_layers, encoder_outputs):
            x = layer(x, self_mask, encoder_hidden_states=memory)
        if positions is not None:  # only the positions whose logits are needed (same values)
            x = x[positions]
        return self.logits(x, word_weight)

    def logits(self, x: torch.Tensor, word_weight: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of decoder states `x` (..., H): head transform, then the tied output projection."""
        x = self.head_transform(x)
        return F.linear(x, word_weight.to(x.dtype)) + self.head_bias

    # --- incremental decoding (KV cache) --------------------------------------------------------
    def memory_cache(self, encoder_outputs: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Cross-attention keys and values (B,heads,N,D) of every decoder layer's visual memory, computed once."""
        cache = []
        for layer, memory in zip(self.decoder_layers, encoder_outputs):
            attn = layer.crossattention.self
            cache.append((_heads(attn.key(memory), attn), _heads(attn.value(memory), attn)))
        return cache

    def step(self, token: torch.Tensor, position: int, memory_kv: list[tuple[torch.Tensor, torch.Tensor]],
             self_kv: list[tuple[torch.Tensor, torch.Tensor]] | None, word_weight: torch.Tensor,
             position_weight: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Logits (B,V) of the next token after `token` (B,) at `position`, given the self-attention keys and
        values of the earlier positions (`self_kv`, None at position 0); returns (logits, the extended cache).

        The same arithmetic as `forward` on the whole prefix, one position at a time: the causal mask only
        hides later positions, and every earlier position is a real token while decoding (no padding)."""
        x = F.embedding(token[:, None], word_weight) + position_weight[position].to(word_weight.dtype)
        x = self.embeddings_dropout(self.embeddings_norm(x.float()))
        new_kv = []
        for i, layer in enumerate(self.decoder_layers):
            attn = layer.attention.self
            k, v = _heads(attn.key(x), attn), _heads(attn.value(x), attn)
            if self_kv is not None:
                k, v = torch.cat([self_kv[i][0], k], dim=2), torch.cat([self_kv[i][1], v], dim=2)
            new_kv.append((k, v))
            h = layer.attention.output(_attend(_heads(attn.query(x), attn), k, v, attn.scaling), x)
            cross = layer.crossattention.self
            mk, mv = memory_kv[i]
            h = layer.crossattention.output(_attend(_heads(cross.query(h), cross), mk, mv, cross.scaling), h)
            x = layer.output(layer.intermediate(h), h)
        return self.logits(x[:, 0], word_weight), new_kv


def _heads(x: torch.Tensor, attn: nn.Module) -> torch.Tensor:
    """(B,L,H) -> (B,heads,L,D)."""
    return x.view(x.shape[0], x.shape[1], -1, attn.attention_head_size).transpose(1, 2)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Unmasked attention of q (B,heads,1,D) over k/v (B,heads,N,D) -> (B,1,H)."""
    out = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), scale=scale)
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)
