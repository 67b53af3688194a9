"""CLIP4IDC: `clip` (pair CLIP) and, in the caption stage, `decoder` (spec 4)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from clip4idc.losses import caption_loss, gather_if_distributed, symmetric_infonce
from clip4idc.models.clip import PairCLIP
from clip4idc.models.config import ClipConfig, DecoderConfig
from clip4idc.models.decoder import CaptionDecoder

STAGES = ("retrieval", "caption")
PAPER = "clip4idc"
CARD = {
    "title": "CLIP4IDC: CLIP for Image Difference Captioning",
    "paper": "Guo et al., CLIP4IDC: CLIP for Image Difference Captioning (AACL-IJCNLP 2022)",
    "task": "image difference captioning (caption stage) / image-pair-text retrieval (retrieval stage)",
    "how_to_load": "from clip4idc.models import CLIP4IDC\nmodel = CLIP4IDC.from_pretrained('DIR')\n"
                   "# captions: python -m clip4idc.predict --init_model DIR --before a.png --after b.png",
}


class CLIP4IDC(nn.Module):
    """Stage 'retrieval' (adaptation: InfoNCE) or 'caption' (fine-tuning: decoder CE)."""

    def __init__(self, clip_cfg: ClipConfig, decoder_cfg: DecoderConfig | None = None, stage: str = "retrieval"):
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.stage = stage
        self.clip = PairCLIP(clip_cfg)
        self.decoder = None
        if stage == "caption":
            if decoder_cfg is None:
                raise ValueError("the caption stage needs a decoder config")
            if decoder_cfg.hidden_size != clip_cfg.embed_dim or decoder_cfg.hidden_size != clip_cfg.transformer_width:
                raise ValueError("decoder hidden_size must equal CLIP embed_dim and transformer_width (tied embeddings)")
            if decoder_cfg.max_target_embeddings != clip_cfg.context_length:
                raise ValueError("decoder max_target_embeddings must equal CLIP context_length (tied positions)")
            self.decoder = CaptionDecoder(decoder_cfg)

    # --- publishing ------------------------------------------------------------------------------
    def pretrained_config(self, max_words: int | None = None) -> dict:
        """Plain-JSON settings that rebuild this model (stage, CLIP and decoder sizes, decoding length)."""
        return {"stage": self.stage, "clip": dataclasses.asdict(self.clip.cfg),
                "decoder": dataclasses.asdict(self.decoder.cfg) if self.decoder is not None else None,
                "max_words": max_words}

    def save_pretrained(self, directory: str | Path, metrics_file: str | Path | None = None,
                        max_words: int | None = None, training_data: str = "not recorded") -> Path:
        """Write config.json + model.safetensors + a model card (metrics from a run's results JSON:
        eval_metrics.json or scores_ep_*.json; CLEVR's per-change-type files give their `total` scores)."""
        from common.pretrained import save_pretrained

        card = dict(CARD, training_data=training_data)
        if metrics_file is not None:
            card.update(metrics=read_results_metrics(metrics_file), metrics_source=str(metrics_file))
        return save_pretrained(self, directory, paper=PAPER, architecture=type(self).__name__,
                               config=self.pretrained_config(max_words), card=card)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "CLIP4IDC":
        """Rebuild the model from a save_pretrained directory (safetensors: no pickle involved); eval mode."""
        from common.checkpoint import CheckpointError
        from common.pretrained import CONFIG_NAME, load_into, read_pretrained

        config, state_dict = read_pretrained(directory, paper=PAPER)
        try:
            clip_cfg = ClipConfig(**config["clip"])
            decoder_cfg = DecoderConfig(**config["decoder"]) if config.get("decoder") else None
            model = cls(clip_cfg, decoder_cfg, config["stage"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(Path(directory) / CONFIG_NAME, f"does not describe a CLIP4IDC model ({err})") from None
        return load_into(model, state_dict, Path(directory)).eval()

    # --- encoders -------------------------------------------------------------------------------
    def encode_pair(self, bef: torch.Tensor, aft: torch.Tensor, return_attention: bool = False):
        """(pooled (B,E), hidden (B,2T,E)) of image pairs."""
        return self.clip.encode_pair(bef, aft, return_attention=return_attention)

    def encode_text(self, input_ids: torch.Tensor):
        """(pooled (B,E), hidden (B,L,E)) of token ids."""
        return self.clip.encode_text(input_ids)

    # --- decoder --------------------------------------------------------------------------------
    @property
    def word_weight(self) -> torch.Tensor:
        """CLIP token embedding, shared with the decoder input and output layers."""
        return self.clip.text.embeddings.token_embedding.weight

    @property
    def position_weight(self) -> torch.Tensor:
        """CLIP text positional embedding, shared with the decoder."""
        return self.clip.text.embeddings.position_embedding.weight

    def decoder_memory(self, visual_hidden: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer visual self-attention outputs fed to the decoder's cross-attention."""
        mask = torch.ones(visual_hidden.shape[:2], device=visual_hidden.device)
        return self.decoder.encode_visual(visual_hidden.float(), mask)

    def decode_step(self, memory: list[torch.Tensor], input_ids: torch.Tensor, decoder_mask=None) -> torch.Tensor:
        """Vocabulary logits (B,L,V) for caption prefixes `input_ids`."""
        return self.decoder(input_ids, memory, self.word_weight, self.position_weight, decoder_mask)

    def decode_start(self, memory: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Cross-attention keys/values of `decoder_memory`'s output, for `decode_next` (computed once per batch)."""
        return self.decoder.memory_cache(memory)

    def decode_next(self, memory_kv, self_kv, token: torch.Tensor, position: int):
        """(logits (B,V) of the token after `token` at `position`, extended self-attention cache): one KV-cached
        decoder step, equal to `decode_step(...)[:, -1]` on the whole prefix."""
        return self.decoder.step(token, position, memory_kv, self_kv, self.word_weight, self.position_weight)

    # --- training objectives --------------------------------------------------------------------
    def retrieval_loss(self, text_ids: torch.Tensor, bef: torch.Tensor, aft: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE over the (all-gathered) batch."""
        text, _ = self.encode_text(text_ids)
        pair, _ = self.encode_pair(bef, aft)
        return symmetric_infonce(gather_if_distributed(text), gather_if_distributed(pair), self.clip.logit_scale)

    def caption_loss(self, bef, aft, in_ids, dec_mask, out_ids) -> torch.Tensor:
        """Token CE of the caption of (bef, aft); the text tower is skipped (spec 9.15 fix)."""
        _, hidden = self.encode_pair(bef, aft)
        # Logits only where the target is not padding: the loss ignores id 0 anyway (spec 9.14).
        keep = out_ids != 0
        logits = self.decoder(in_ids, self.decoder_memory(hidden), self.word_weight, self.position_weight,
                              dec_mask, positions=keep)
        return caption_loss(logits, out_ids[keep])

    def forward(self, bef, aft, text_ids=None, in_ids=None, dec_mask=None, out_ids=None,
                no_aft=None, no_in_ids=None, no_dec_mask=None, no_out_ids=None) -> torch.Tensor:
        """Training loss of the stage; CLEVR captioning adds the distractor-pair loss (weights 1 and 1)."""
        if self.stage == "retrieval":
            return self.retrieval_loss(text_ids, bef, aft)
        if no_aft is None:
            return self.caption_loss(bef, aft, in_ids, dec_mask, out_ids)
        if in_ids.shape != no_in_ids.shape:  # different caption lengths: two passes
            return (self.caption_loss(bef, aft, in_ids, dec_mask, out_ids)
                    + self.caption_loss(bef, no_aft, no_in_ids, no_dec_mask, no_out_ids))
        # One pass over the change and distractor pairs stacked along the batch (fewer, larger kernels);
        # the loss is still mean CE of the change captions + mean CE of the no-change captions.
        _, hidden = self.encode_pair(torch.cat([bef, bef]), torch.cat([aft, no_aft]))
        out = torch.cat([out_ids, no_out_ids])
        keep = out != 0
        logits = self.decoder(torch.cat([in_ids, no_in_ids]), self.decoder_memory(hidden), self.word_weight,
                              self.position_weight, torch.cat([dec_mask, no_dec_mask]), positions=keep)
        targets, n_change = out[keep], int(keep[: in_ids.shape[0]].sum())
        return caption_loss(logits[:n_change], targets[:n_change]) + caption_loss(logits[n_change:], targets[n_change:])


def read_results_metrics(path: str | Path) -> dict[str, float]:
    """Numeric scores of a results JSON of this code (eval_metrics.json, scores_ep_*.json; `total` when split)."""
    from common.errors import InputError

    try:
        results = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(path, f"not a readable results JSON ({err})") from None
    if isinstance(results, dict) and isinstance(results.get("total"), dict):
        results = results["total"]
    metrics = {k: float(v) for k, v in results.items() if isinstance(v, (int, float)) and not isinstance(v, bool)} \
        if isinstance(results, dict) else {}
    if not metrics:
        raise InputError(path, "holds no numeric scores (expected eval_metrics.json or scores_ep_*.json)")
    return metrics


def init_bert_weights(module: nn.Module, std: float = 0.02) -> None:
    """The original's init_weights for the decoder: Linear/Embedding N(0, std), biases 0, LayerNorm 1/0."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_model(clip_cfg: ClipConfig, decoder_cfg: DecoderConfig | None = None, stage: str = "retrieval",
                initializer_range: float = 0.02) -> CLIP4IDC:
    """A randomly initialised CLIP4IDC (OpenAI init for CLIP, BERT init for the decoder)."""
    model = CLIP4IDC(clip_cfg, decoder_cfg, stage)
    if not any(p.is_meta for p in model.parameters()):
        model.clip.initialize_parameters()
        if model.decoder is not None:
            init_bert_weights(model.decoder, initializer_range)
    return model
