"""ALBEF-style BERT ("xbert"): text layers [0, fusion_layer), then layers with cross-attention.

Built from transformers' ``BertEmbeddings``/``BertLayer``/``BertOnlyMLMHead`` so the state-dict keys are
the original ones (``embeddings.*``, ``encoder.layer.N.{attention,crossattention,intermediate,output}.*``,
``cls.predictions.*``), spec 4.2.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertEmbeddings, BertLayer, BertOnlyMLMHead

NEG_INF = -10000.0


ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


def load_bert_config(path_or_dict, attn_implementation: str = "sdpa", **overrides) -> BertConfig:
    """Return a BertConfig from a JSON file or dict, with ``fusion_layer``/``encoder_width`` kept as attributes.

    ``attn_implementation``: ``sdpa`` (fused ``scaled_dot_product_attention``, the default) or ``eager`` (the
    original's matmul + softmax + matmul).
    """
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {attn_implementation!r}")
    if isinstance(path_or_dict, dict):
        cfg = BertConfig(**path_or_dict)
    else:
        cfg = BertConfig.from_json_file(str(path_or_dict))
    for key, value in overrides.items():
        setattr(cfg, key, value)
    if not hasattr(cfg, "fusion_layer"):
        cfg.fusion_layer = cfg.num_hidden_layers
    if not hasattr(cfg, "encoder_width"):
        cfg.encoder_width = cfg.hidden_size
    cfg._attn_implementation = attn_implementation
    return cfg


def extend_padding_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) 1/0 mask -> additive (B, 1, 1, L) mask with -10000 at padding (xbert semantics)."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * NEG_INF


def extend_causal_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) padding mask -> additive (B, 1, L, L) causal x padding mask."""
    length = mask.shape[1]
    causal = torch.tril(torch.ones(length, length, device=mask.device, dtype=dtype))
    full = causal[None, :, :] * mask[:, None, :].to(dtype)
    return (1.0 - full[:, None, :, :]) * NEG_INF


def _make_layer(config: BertConfig, cross: bool, causal: bool) -> BertLayer:
    cfg = copy.deepcopy(config)
    cfg.is_decoder = cross or causal
    cfg.add_cross_attention = cross
    layer = BertLayer(cfg)
    layer.attention.self.is_causal = False  # masks are always passed explicitly
    if cross:
        heads = cfg.num_attention_heads * (cfg.hidden_size // cfg.num_attention_heads)
        # cross-attention keys/values read the visual width (spec 4.2: Linear(encoder_width, 768))
        layer.crossattention.self.key = nn.Linear(cfg.encoder_width, heads)
        layer.crossattention.self.value = nn.Linear(cfg.encoder_width, heads)
    return layer


class XBertEncoder(nn.Module):
    """Stack of BertLayers; layers >= fusion_layer carry cross-attention."""

    def __init__(self, config: BertConfig, causal: bool = False):
        super().__init__()
        self.config = config
        self.fusion_layer = config.fusion_layer
        self.layer = nn.ModuleList(
            [_make_layer(config, cross=i >= config.fusion_layer, causal=causal) for i in range(config.num_hidden_layers)]
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        mode: str = "multi_modal",
    ) -> torch.Tensor:
        """Run the layers selected by ``mode`` (text/temporal: [0, fusion); fusion: [fusion, N); multi_modal: all)."""
        if mode in ("text", "temporal"):
            layers = range(0, self.fusion_layer)
        elif mode == "fusion":
            layers = range(self.fusion_layer, len(self.layer))
        elif mode == "multi_modal":
            layers = range(0, len(self.layer))
        else:
            raise ValueError(f"unknown xbert mode {mode!r}")
        for i in layers:
            if i >= self.fusion_layer and encoder_hidden_states is None:
                raise ValueError("encoder_hidden_states must be given for cross-attention layers")
            hidden_states = self.layer[i](
                hidden_states,
                attention_mask,
                encoder_hidden_states if i >= self.fusion_layer else None,
                encoder_attention_mask=encoder_attention_mask,
            )
        return hidden_states


class XBertModel(nn.Module):
    """xbert ``BertModel(add_pooling_layer=False)``: embeddings + fusion-aware encoder."""

    def __init__(self, config: BertConfig, causal: bool = False):
        super().__init__()
        self.config = config
        self.causal = causal
        self.embeddings = BertEmbeddings(config)
        self.encoder = XBertEncoder(config, causal=causal)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        mode: str = "multi_modal",
    ) -> torch.Tensor:
        """Return last hidden states (B, L, d); ``encoder_embeds`` bypasses the embeddings (fusion mode)."""
        hidden = encoder_embeds if encoder_embeds is not None else self.embeddings(input_ids=input_ids)
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], device=hidden.device, dtype=torch.long)
        ext = (extend_causal_mask if self.causal else extend_padding_mask)(attention_mask, hidden.dtype)
        enc_ext = None
        if encoder_attention_mask is not None and not bool(encoder_attention_mask.all()):
            enc_ext = extend_padding_mask(encoder_attention_mask, hidden.dtype)
        return self.encoder(hidden, ext, encoder_hidden_states, enc_ext, mode=mode)


class XBertForMaskedLM(nn.Module):
    """``.bert`` + ``.cls`` MLM head whose decoder weight is tied to the word embeddings."""

    def __init__(self, config: BertConfig, causal: bool = False):
        super().__init__()
        self.config = config
        self.bert = XBertModel(config, causal=causal)
        self.cls = BertOnlyMLMHead(config)
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight
        self.cls.predictions.decoder.bias = self.cls.predictions.bias

    def forward(self, labels: torch.Tensor | None = None, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (logits, mean CE over positions with label != -100, or None)."""
        hidden = self.bert(**kwargs)
        logits = self.cls(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100)
        return logits, loss


class XBertLMHeadModel(XBertForMaskedLM):
    """Causal decoder (QA answer decoder): every layer cross-attends to the question states."""

    def __init__(self, config: BertConfig):
        super().__init__(config, causal=True)

    def sequence_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Shifted token CE summed over each sequence -> (N,) (xbert ``reduction='none'``)."""
        shifted = logits[:, :-1].contiguous()
        target = labels[:, 1:].contiguous()
        loss = F.cross_entropy(shifted.view(-1, shifted.shape[-1]), target.view(-1), ignore_index=-100, reduction="none")
        return loss.view(target.shape).sum(1)


def init_bert_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT init: normal(0, std) for Linear/Embedding weights, zero biases, LayerNorm 1/0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=std)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
