"""Singularity retrieval / pre-training models: ITC, ITM (safe hard negatives) and MLM losses (spec 4)."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn import functional as F

from singularity.models import publish
from singularity.models.config_paths import KNOWN_VIT_CONFIGS, cfg_get, resolve_path
from singularity.models.vision import (
    build_temporal_encoder,
    build_vision_encoder,
    load_beit_config,
    resize_temporal_embeddings,
)
from singularity.models.xbert import XBertForMaskedLM, XBertModel, init_bert_weights, load_bert_config

logger = logging.getLogger("singularity")


def _settings(value):
    """A config node given inline (mapping) as a plain dict; a path unchanged."""
    if isinstance(value, DictConfig):
        return OmegaConf.to_container(value, resolve=True)
    return dict(value) if isinstance(value, Mapping) else value


def vit_config_path(config) -> str | dict:
    """The BEiT config JSON for ``config`` (``vit_config`` key: a path or the settings inline, else the bundled
    one for the hub name)."""
    if str(cfg_get(config, "vit_type", "beit")) != "beit":
        raise ValueError("vit_type must be beit (the deit/vit code paths of the original were never used)")
    explicit = _settings(cfg_get(config, "vit_config"))
    if isinstance(explicit, dict):
        return explicit
    if explicit:
        return str(resolve_path(explicit))
    name = str(cfg_get(config, "vit_name_or_pretrained_path", "microsoft/beit-base-patch16-224-pt22k-ft22k"))
    if name in KNOWN_VIT_CONFIGS:
        return str(resolve_path(KNOWN_VIT_CONFIGS[name]))
    path = resolve_path(name)
    return str(path / "config.json" if path.is_dir() else path)


class SingularityBase(nn.Module):
    """BEiT + vision LayerNorm + temporal parts + xbert text encoder (shared by all task models)."""

    def __init__(self, config, pretrain: bool = False, with_pooler: bool = True):
        super().__init__()
        self.config = config
        self.pretrain = pretrain
        attn = str(cfg_get(config, "attn_implementation", "sdpa"))
        vit_cfg = load_beit_config(vit_config_path(config), cfg_get(config, "image_res", 224), attn)
        self.vision_encoder = build_vision_encoder(vit_cfg)
        if not with_pooler:
            self.vision_encoder.pooler = None
        self.vision_width = vit_cfg.hidden_size
        self.vision_layernorm = nn.LayerNorm(self.vision_width, eps=1e-12)
        bert_settings = _settings(cfg_get(config, "bert_config", "configs/config_bert.json"))
        if not isinstance(bert_settings, dict):
            bert_settings = resolve_path(bert_settings)
        self.bert_config = load_bert_config(bert_settings, attn_implementation=attn, encoder_width=self.vision_width)
        self.text_width = self.bert_config.hidden_size
        self.text_encoder = XBertForMaskedLM(self.bert_config) if pretrain else XBertModel(self.bert_config)
        init_bert_weights(self.text_encoder, self.bert_config.initializer_range)
        self.num_frames = int(cfg_get(config, "video_input.num_frames", 1))
        self.add_temporal_embed = bool(cfg_get(config, "add_temporal_embed", False))
        self.resize_learned_tables = bool(cfg_get(config, "resize_learned_tables", False))
        self._resize_logged: set[int] = set()
        self.temporal_embeddings = nn.Parameter(torch.zeros(1, self.num_frames, 1, self.vision_width))
        self.use_temporal_encoder = bool(cfg_get(config, "temporal_vision_encoder.enable", False))
        self.update_pooler_embed = bool(cfg_get(config, "temporal_vision_encoder.update_pooler_embed", False))
        if self.use_temporal_encoder:
            self.temporal_vision_encoder = build_temporal_encoder(
                bert_settings,
                int(cfg_get(config, "temporal_vision_encoder.num_layers", 2)), self.vision_width, attn)

    TASK = "retrieval"

    def settings(self) -> dict:
        """Plain-JSON settings that rebuild this model (``config.json`` of ``save_pretrained``)."""
        return publish.model_settings(self)

    def save_pretrained(self, directory: str | Path, metrics_file: str | Path | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` + a ``README.md`` model card (metrics from
        ``metrics_file``, an ``eval_res*.json`` / QA accuracy JSON of the run, when given)."""
        return publish.save(self, directory, metrics_file)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "SingularityBase":
        """The model of a ``save_pretrained`` directory (no pickle involved), in eval mode."""
        return publish.load(cls, directory)

    def unused_parameter_names(self) -> list[str]:
        """Parameters (or modules) that no training step of this configuration uses.

        DDP needs ``find_unused_parameters=True`` only when this is not empty: the temporal embeddings
        without ``add_temporal_embed``, the temporal encoder on 1-frame clips, BEiT's pooler when
        ``update_pooler_embed`` takes the pooled features from the temporal encoder.
        """
        names = []
        if not self.add_temporal_embed:
            names.append("temporal_embeddings")
        if self.use_temporal_encoder and self.num_frames == 1:
            names.append("temporal_vision_encoder")
        elif self.use_temporal_encoder and self.update_pooler_embed and self.vision_encoder.pooler is not None:
            names.append("vision_encoder.pooler")  # pooled = the temporal encoder's CLS tokens instead
        return names

    @property
    def text_bert(self) -> XBertModel:
        """The BERT body of the text encoder (``text_encoder.bert`` in pre-training)."""
        return self.text_encoder.bert if self.pretrain else self.text_encoder

    def _encode_image(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-frame BEiT: (B,T,3,H,W) -> tokens (B,T,L,d) after vision_layernorm, pooled (B,T,d) or None."""
        b, t = image.shape[:2]
        out = self.vision_encoder(pixel_values=image.reshape(b * t, *image.shape[2:]))
        tokens = self.vision_layernorm(out.last_hidden_state)
        tokens = tokens.view(b, t, tokens.shape[1], tokens.shape[2])
        pooled = out.pooler_output.view(b, t, -1) if out.pooler_output is not None else None
        return tokens, pooled

    def encode_image(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Early-fusion memory (B, T*L, d) and pooled (B, T, d), with temporal embeddings / encoder (spec 4.3)."""
        tokens, pooled = self._encode_image(image)
        b, t, length, d = tokens.shape
        if self.add_temporal_embed:
            if t != self.temporal_embeddings.shape[1]:
                self._check_temporal_resize(t)
            tokens = tokens + resize_temporal_embeddings(self.temporal_embeddings, t).to(tokens.dtype)
        if t > 1 and self.use_temporal_encoder:
            x = tokens.transpose(1, 2).reshape(b * length, t, d)
            x = self.temporal_vision_encoder(x, None, mode="temporal")
            tokens = x.reshape(b, length, t, d).transpose(1, 2)
            if self.update_pooler_embed:
                pooled = tokens[:, :, 0]
        return tokens.reshape(b, t * length, d), pooled

    def _check_temporal_resize(self, frames: int) -> None:
        """Resizing the learned temporal embeddings to ``frames`` needs ``resize_learned_tables`` (logged once)."""
        have = self.temporal_embeddings.shape[1]
        if not self.resize_learned_tables:
            raise ValueError(f"{frames} frames but {have} learned temporal embeddings: pass "
                             "resize_learned_tables=True to truncate / interpolate them (the original's behaviour)")
        if frames not in self._resize_logged:
            self._resize_logged.add(frames)
            how = "linearly interpolated" if frames > have else "truncated"
            logger.warning("temporal embeddings %s from %d to %d frames (resize_learned_tables=True)", how, have, frames)

    def encode_text(self, text: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Text-only layers -> (hidden (B, Lt, d), CLS (B, d))."""
        hidden = self.text_bert(input_ids=text["input_ids"], attention_mask=text["attention_mask"], mode="text")
        return hidden, hidden[:, 0]

    def fusion(self, text_hidden: torch.Tensor, text_mask: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """Fusion layers over encoded text with cross-attention to visual tokens -> (B, Lt, d)."""
        return self.text_bert(encoder_embeds=text_hidden, attention_mask=text_mask,
                              encoder_hidden_states=image_tokens, mode="fusion")


class SingularityRetrieval(SingularityBase):
    """Retrieval model (``model_retrieval.Singularity``): ITC + ITM."""

    def __init__(self, config, pretrain: bool = False):
        super().__init__(config, pretrain=pretrain)
        embed_dim = int(cfg_get(config, "embed_dim", 256))
        self.vision_proj = nn.Linear(self.vision_width, embed_dim)
        self.text_proj = nn.Linear(self.text_width, embed_dim)
        self.temp = nn.Parameter(torch.ones([]) * float(cfg_get(config, "temp", 0.07)))
        self.itm_head = nn.Linear(self.text_width, 2)
        self.itm_hard_neg = bool(cfg_get(config, "itm_hard_neg", True))
        # bert-base-uncased ids; tasks call ``set_special_tokens`` with the tokenizer in use
        self.cls_token_id, self.mask_token_id = 101, 103
        self.loss_weight = {k: float(cfg_get(config, f"loss_weight.{k}", 1.0)) for k in ("itc", "itm", "mlm")}

    def set_special_tokens(self, tokenizer) -> None:
        """Take the [CLS]/[MASK] ids used by MLM masking from ``tokenizer``."""
        self.cls_token_id, self.mask_token_id = tokenizer.cls_token_id, tokenizer.mask_token_id

    def get_sim(self, pooled_image: torch.Tensor, pooled_text: torch.Tensor, t: float | torch.Tensor = 1.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean over frames of cosine similarities / t -> (sim_i2t (M,N), sim_t2i (N,M))."""
        vi = F.normalize(self.vision_proj(pooled_image), dim=-1)
        vt = F.normalize(self.text_proj(pooled_text), dim=-1)
        sim_i2t = torch.einsum("mtd,nd->mtn", vi, vt).mean(1) / t
        return sim_i2t, sim_i2t.t()

    def itm_logits(self, text_hidden: torch.Tensor, text_mask: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """ITM head on the fused CLS -> (B, 2)."""
        return self.itm_head(self.fusion(text_hidden, text_mask, image_tokens)[:, 0])

    def forward(self, image: torch.Tensor, text: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training losses ``{"loss_ita", "loss_itm"}`` (plus ``loss_mlm`` in pre-training)."""
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
        image_tokens, pooled_image = self.encode_image(image)
        text_hidden, text_cls = self.encode_text(text)
        sim_i2t, sim_t2i = self.get_sim(pooled_image, text_cls, self.temp)
        losses = {"loss_ita": itc_loss(sim_i2t, sim_t2i, idx) * self.loss_weight["itc"]}
        losses["loss_itm"] = self.itm_loss(image_tokens, text_hidden, text["attention_mask"], sim_i2t, sim_t2i, idx)
        if self.pretrain:
            losses["loss_mlm"] = self.mlm_loss(text, image_tokens) * self.loss_weight["mlm"]
        return losses

    def itm_loss(self, image_tokens, text_hidden, text_mask, sim_i2t, sim_t2i, idx) -> torch.Tensor:
        """ITM CE over positives and one sampled negative image per text and text per image (spec 4.4)."""
        img_neg, txt_rows = sample_negatives(sim_t2i, idx, self.itm_hard_neg)  # negative image for each text row
        txt_neg, img_rows = sample_negatives(sim_i2t, idx, self.itm_hard_neg)  # negative text for each image row
        b = image_tokens.shape[0]
        text_all = torch.cat([text_hidden, text_hidden[txt_rows], text_hidden[txt_neg]], dim=0)
        mask_all = torch.cat([text_mask, text_mask[txt_rows], text_mask[txt_neg]], dim=0)
        image_all = torch.cat([image_tokens, image_tokens[img_neg], image_tokens[img_rows]], dim=0)
        logits = self.itm_logits(text_all, mask_all, image_all)
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        labels[:b] = 1
        return F.cross_entropy(logits, labels) * self.loss_weight["itm"]

    def mlm_loss(self, text: dict[str, torch.Tensor], image_tokens: torch.Tensor) -> torch.Tensor:
        """Masked LM with cross-attention to the image (mlm_prob of spec 4.4)."""
        prob = float(cfg_get(self.config, "mlm_prob", 0.5))
        ids, labels = mask_tokens(text["input_ids"], self.bert_config.vocab_size, prob,
                                  pad_id=self.bert_config.pad_token_id or 0, cls_id=self.cls_token_id,
                                  mask_id=self.mask_token_id)
        hidden = self.text_encoder.bert(input_ids=ids, attention_mask=text["attention_mask"], mode="text")
        _, loss = self.text_encoder(labels=labels, encoder_embeds=hidden, attention_mask=text["attention_mask"],
                                    encoder_hidden_states=image_tokens, mode="fusion")
        return loss


class SingularityPretrain(SingularityRetrieval):
    """Pre-training model (``model_pretrain.Singularity``): ITC + ITM + MLM."""

    TASK = "pretrain"

    def __init__(self, config):
        super().__init__(config, pretrain=True)


def itc_loss(sim_i2t: torch.Tensor, sim_t2i: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Contrastive loss with targets = row-normalised ``idx_i == idx_j`` (local batch only, pitfall 9.6 K)."""
    idx = idx.view(-1, 1)
    pos = torch.eq(idx, idx.t()).to(sim_i2t.dtype)
    targets = pos / pos.sum(1, keepdim=True)
    loss_i2t = -(F.log_softmax(sim_i2t, dim=1) * targets).sum(1).mean()
    loss_t2i = -(F.log_softmax(sim_t2i, dim=1) * targets).sum(1).mean()
    return (loss_i2t + loss_t2i) / 2


@torch.no_grad()
def sample_negatives(sim: torch.Tensor, idx: torch.Tensor, hard: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One negative column per row of ``sim`` (softmax-weighted if ``hard`` else uniform), never a positive.

    Returns (negative column ids, row ids that have one). Rows with no negative at all (every item shares the
    row's match id) are left out instead of crashing ``torch.multinomial`` (pitfall 9.7 F).
    """
    idx = idx.view(-1, 1)
    negative = ~torch.eq(idx, idx.t())
    if hard:
        weights = F.softmax(sim.float() + 1e-4, dim=1) * negative
    else:
        weights = negative.float()
    # softmax can underflow to 0 on every negative of a row: fall back to uniform over its negatives
    empty = weights.sum(1) <= 0
    weights[empty] = negative[empty].float()
    rows = torch.nonzero(negative.any(1), as_tuple=False).view(-1)
    if rows.numel() == 0:
        return rows, rows
    cols = torch.multinomial(weights[rows], 1).view(-1)
    return cols, rows


def mask_tokens(input_ids: torch.Tensor, vocab_size: int, prob: float, pad_id: int = 0, cls_id: int = 101,
                mask_id: int = 103, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MLM masking of spec 4.4: Bernoulli(prob) never on [PAD]/[CLS]; 80% [MASK], ~10% random id, rest kept."""
    ids = input_ids.clone()
    labels = input_ids.clone()
    dev = ids.device
    masked = torch.bernoulli(torch.full(ids.shape, prob, device=dev), generator=generator).bool()
    masked[ids == pad_id] = False
    masked[ids == cls_id] = False
    labels[~masked] = -100
    replace = torch.bernoulli(torch.full(ids.shape, 0.8, device=dev), generator=generator).bool() & masked
    ids[replace] = mask_id
    rand = torch.bernoulli(torch.full(ids.shape, 0.5, device=dev), generator=generator).bool() & masked & ~replace
    random_words = torch.randint(vocab_size, ids.shape, dtype=torch.long, generator=generator, device=dev)
    ids[rand] = random_words[rand]
    return ids, labels
