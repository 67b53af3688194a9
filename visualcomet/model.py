"""VisualCOMET model: transformers' GPT2LMHeadModel plus the visual embedding path of spec 4.4.

Visual vectors ``LN(ReLU(Linear(Dropout(feat)))) [+ box embedding] + wte[person_id] + subject_embed[subject_id]``
overwrite the token embeddings at positions 1..nb_max; the sequence then runs through an unmodified GPT-2 with
absolute positions 0..L-1 and no attention mask (pitfall 4, K). Parameter names match the original checkpoint
(``transformer.detector.*``, ``transformer.subject_embed``) so ``convert.py`` only drops the causal-mask buffers.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel
from transformers.cache_utils import Cache

from common.errors import InputError

log = logging.getLogger("visualcomet.model")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # a directory holding both reads the first
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
VC_CONFIG_KEYS = ("max_event", "max_place", "max_inference", "use_person_ids", "use_subject_ids", "use_bbox")


def make_config(vocab_size: int = 50317, n_layer: int = 12, n_head: int = 12, n_embd: int = 768,
                n_positions: int = 1024, feature_dim: int = 2048, max_event: int = 39, max_place: int = 22,
                max_inference: int = 23, use_person_ids: bool = True, use_subject_ids: bool = True,
                use_bbox: bool = False, **kwargs: Any) -> GPT2Config:
    """A GPT2Config carrying the VisualCOMET keys (defaults = the released gpt2-small model)."""
    return GPT2Config(vocab_size=vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=n_positions,
                      feature_dim=feature_dim, max_event=max_event, max_place=max_place, max_inference=max_inference,
                      use_person_ids=use_person_ids, use_subject_ids=use_subject_ids, use_bbox=use_bbox,
                      bos_token_id=None, eos_token_id=None, **kwargs)


class VisualDetector(nn.Module):
    """``SimpleDetector`` of the original: projects RoI features (and optionally boxes) to the GPT-2 width."""

    def __init__(self, feature_dim: int, n_embd: int, use_bbox: bool = False, dropout: float = 0.1):
        super().__init__()
        self.obj_downsample = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, n_embd), nn.ReLU())
        if use_bbox:
            self.bbox_upsample = nn.Sequential(nn.Dropout(dropout), nn.Linear(4, n_embd), nn.ReLU())
        # Created but never used in forward by the original (kept so its checkpoint loads strictly); frozen, so that
        # DDP need not search for unused parameters (it never had a gradient, so nothing changes).
        self.regularizing_predictor = nn.Linear(feature_dim, 91).requires_grad_(False)
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-12)
        self.use_bbox = use_bbox

    def forward(self, feats: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """(M, D) packed features [+ (M, 4) pixel boxes] -> (M, n_embd)."""
        v = self.ln_f(self.obj_downsample(feats))
        if self.use_bbox:
            v = v + self.ln_f(self.bbox_upsample(boxes))
        return v


class VisualCometLMHead(GPT2LMHeadModel):
    """``GPT2VisionAttentiveLMHead``: GPT-2 LM whose image-slot embeddings are replaced by visual vectors."""

    def __init__(self, config: GPT2Config):
        super().__init__(config)
        feature_dim = getattr(config, "feature_dim", 2048)
        self.transformer.detector = VisualDetector(feature_dim, config.n_embd, bool(getattr(config, "use_bbox", False)))
        if getattr(config, "use_subject_ids", True):
            self.transformer.subject_embed = nn.Embedding(2, config.n_embd)
        self._init_visual(self.transformer.detector)
        if hasattr(self.transformer, "subject_embed"):
            self._init_visual(self.transformer.subject_embed)
        # Pitfall 5 (O): the original zero-fills unused slots up to the batch maximum; False keeps wte[<eot>].
        self.zero_fill_visual_slots = True

    def save_pretrained(self, save_directory: str | os.PathLike, metrics_file: str | os.PathLike | None = None,
                        tokenizer=None, training_args: dict | None = None, **_: Any) -> Path:
        """config.json + model.safetensors + README.md model card (metrics from ``metrics_file``); see module."""
        return save_pretrained(self, save_directory, tokenizer, training_args, metrics_file)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, trust: bool = False, partial: bool = False,
                        **_: Any) -> "VisualCometLMHead":
        """The model of a ``save_pretrained`` directory (or a released 2.4.1 one), in eval mode."""
        model, _ = load_pretrained(directory, trust=trust, require_weights=True, partial=partial)
        return model.eval()

    @property
    def feature_dim(self) -> int:
        """Width of the RoI features the visual projection takes."""
        return self.transformer.detector.obj_downsample[1].in_features

    def _init_visual(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        for m in module.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)) and m.weight.device.type != "meta":
                nn.init.normal_(m.weight, 0.0, std)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm) and m.weight.device.type != "meta":
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def visual_embeddings(self, img_feats: torch.Tensor, boxes_mask: torch.Tensor, person_ids: torch.Tensor,
                          subject_ids: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """(B, nb_max, n_embd) visual vectors, zero-padded beyond each example's valid boxes (spec 4.4)."""
        valid = boxes_mask.bool()
        nb_max = int(valid.sum(1).max().item()) if valid.numel() else 0
        B = img_feats.shape[0]
        out = img_feats.new_zeros(B, nb_max, self.config.n_embd)
        if nb_max == 0:
            return out
        v = self.transformer.detector(img_feats[valid], boxes[valid] if boxes is not None else None)
        if getattr(self.config, "use_person_ids", True):
            v = v + self.transformer.wte(person_ids[valid])
        if getattr(self.config, "use_subject_ids", True):
            v = v + self.transformer.subject_embed(subject_ids[valid])
        slot = torch.cumsum(valid.long(), 1) - 1
        out[valid.nonzero(as_tuple=True)[0], slot[valid]] = v.to(out.dtype)
        return out

    def embed(self, input_ids: torch.Tensor, img_feats: torch.Tensor | None = None,
              boxes_mask: torch.Tensor | None = None, person_ids: torch.Tensor | None = None,
              subject_ids: torch.Tensor | None = None, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with the image slot (positions 1..nb_max) overwritten by visual vectors."""
        emb = self.transformer.wte(input_ids)
        if img_feats is None:
            return emb
        if subject_ids is None:
            subject_ids = torch.zeros_like(person_ids)
        vis = self.visual_embeddings(img_feats, boxes_mask, person_ids, subject_ids, boxes)
        nb = vis.shape[1]
        if nb == 0:
            return emb
        if not self.zero_fill_visual_slots:
            keep = boxes_mask[:, :nb].bool().unsqueeze(-1)
            vis = torch.where(keep, vis, emb[:, 1:1 + nb])
        return torch.cat([emb[:, :1], vis.to(emb.dtype), emb[:, 1 + nb:]], dim=1)

    def forward(self, input_ids: torch.Tensor, img_feats: torch.Tensor | None = None,
                boxes_mask: torch.Tensor | None = None, person_ids: torch.Tensor | None = None,
                subject_ids: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, cache: Cache | None = None, use_cache: bool = False,
                position_offset: int = 0, past_key_values: Cache | None = None, **_: Any) -> dict[str, Any]:
        """Logits (B, L, V), the token-mean LM loss when ``labels`` are given, and the KV cache when asked.

        The cache is a transformers ``DynamicCache`` (created on the first ``use_cache`` call, then passed back as
        ``cache``); ``past_key_values`` is accepted as an alias of ``cache`` and the result carries it under both
        names.
        """
        cache = cache if cache is not None else past_key_values
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        # The image slot only exists in the first chunk; cached continuation steps embed plain tokens.
        emb = self.embed(input_ids, img_feats if position_offset == 0 else None, boxes_mask, person_ids,
                         subject_ids, boxes)
        L = input_ids.shape[1]
        position_ids = torch.arange(position_offset, position_offset + L, device=input_ids.device).unsqueeze(0)
        out = self.transformer(inputs_embeds=emb, position_ids=position_ids.expand(input_ids.shape[0], -1),
                               cache=cache if use_cache else None, use_cache=use_cache)
        logits = self.lm_head(out.last_hidden_state)
        if use_cache and cache.get_seq_length() != position_offset + L:
            raise RuntimeError("transformers did not fill the KV cache passed as cache= (GPT2Model takes it from "
                               "5.25 on); install the versions in visualcomet/requirements.txt")
        kept = cache if use_cache else None  # the transformer filled this cache object in place
        result = {"logits": logits, "cache": kept, "past_key_values": kept}
        if labels is not None:
            result["loss"] = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                             labels[:, 1:].reshape(-1), ignore_index=-100)
        return result


def sequence_scores(logits: torch.Tensor, labels: torch.Tensor, original_denominator: bool = True) -> torch.Tensor:
    """Per-sequence rank score exp(sum CE / n) (spec 4.6); n = #labelled + 1 like the original (pitfall 11 K/O)."""
    ce = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), labels[:, 1:], ignore_index=-100, reduction="none")
    n_lab = (labels[:, 1:] != -100).sum(1).float()
    denom = n_lab + 1 if original_denominator else n_lab.clamp(min=1)
    return torch.exp(ce.sum(1) / denom)


# ---------------------------------------------------------------------------------------------------- load / save
def load_config(directory: str | os.PathLike) -> GPT2Config:
    """Read a (2.4.1 or current) GPT-2 config.json with the VisualCOMET keys."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise InputError(path, "model config not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON: {err}") from None
    # 2.4.1 keys with no meaning here (and defaults that conflict with 5.x validation).
    if raw.get("paper", PAPER) != PAPER:
        raise InputError(path, f"holds a {raw['paper']!r} model, not a VisualCOMET one", field="paper")
    for k in ("eos_token_ids", "bos_token_id", "eos_token_id", "pad_token_id", "architectures") + PUBLISHED_KEYS:
        raw.pop(k, None)
    raw.setdefault("feature_dim", 2048)
    return GPT2Config(**{**raw, "bos_token_id": None, "eos_token_id": None})


PAPER = "visualcomet"
ARCHITECTURE = "GPT2VisionAttentiveLMHead"
PUBLISHED_KEYS = ("paper", "architecture", "layout_version")
CARD = {
    "paper": "VisualCOMET: Reasoning about the Dynamic Context of a Still Image (Park et al., ECCV 2020)",
    "task": "commonsense inference generation (intent / before / after) from an image, an event and a place",
    "how_to_load": "from visualcomet.model import VisualCometLMHead\n"
                   "from visualcomet.tokenization import VisualCometTokenizer\n"
                   "model = VisualCometLMHead.from_pretrained(DIR)\n"
                   "tokenizer = VisualCometTokenizer.from_pretrained(DIR)",
}


def card_metrics(metrics_file: str | os.PathLike) -> dict[str, float]:
    """The numeric top-level values of a results JSON (metrics.json, *.evaluate.json, *_rank_*.json)."""
    path = Path(metrics_file)
    if not path.is_file():
        raise InputError(path, "results file for the model card not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise InputError(path, "expected a JSON object of results")
    return {k: v for k, v in raw.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def save_pretrained(model: VisualCometLMHead, directory: str | os.PathLike, tokenizer=None,
                    training_args: dict | None = None, metrics_file: str | os.PathLike | None = None) -> Path:
    """Write config.json + model.safetensors + README.md (model card) [+ tokenizer, training_args.json].

    The publishable layout of ``common.pretrained``: loading it runs no pickle. The card's metrics come from
    ``metrics_file`` (a results JSON of this package) when given. ``load_pretrained`` still reads the original's
    ``pytorch_model.bin`` directories.
    """
    from common import pretrained
    from common.checkpoint import atomic_write_text

    directory = Path(directory)
    config = {k: v for k, v in json.loads(model.config.to_json_string(use_diff=False)).items()
              if k not in PUBLISHED_KEYS + ("architectures", "_name_or_path")}
    card = dict(CARD)
    if training_args is not None:
        card["training_data"] = f"VisualCOMET annotations in {training_args.get('data_dir', '?')} " \
                                f"(mode {training_args.get('mode', 'inference')})"
    if metrics_file is not None:
        card["metrics"] = card_metrics(metrics_file)
        card["metrics_source"] = Path(metrics_file).name
    pretrained.save_pretrained(model, directory, paper=PAPER, architecture=ARCHITECTURE, config=config, card=card)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    if training_args is not None:
        atomic_write_text(directory / "training_args.json", json.dumps(training_args, indent=2, default=str))
    return directory


def resolve_model_dir(name: str | os.PathLike) -> Path:
    """A local directory as is; otherwise a Hugging Face hub id (e.g. ``gpt2``) fetched into the local HF cache."""
    path = Path(name)
    if path.is_dir():
        return path
    if path.exists() or str(name).startswith((".", "/")) or str(name).count("/") > 1:
        raise InputError(name, "model directory not found")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name), allow_patterns=["config.json", "vocab.json", "merges.txt",
                                                                  "model.safetensors"]))
    except Exception as err:  # offline, unknown id, ...: one clear line instead of a hub traceback
        raise InputError(name, f"not a local directory and not fetchable from the Hugging Face hub ({err})") from err


def _is_published(directory: Path) -> bool:
    """Whether config.json was written by ``save_pretrained`` (it names the paper)."""
    try:
        return "paper" in json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False


def load_pretrained(directory: str | os.PathLike, config_name: str | None = None, trust: bool = False,
                    require_weights: bool = False, overrides: dict[str, Any] | None = None,
                    vocab_size: int | None = None, allow_plain_gpt2: bool = False,
                    partial: bool = False) -> tuple[VisualCometLMHead, bool]:
    """Build the model from a checkpoint directory (released 2.4.1 layout or ours); returns (model, weights_loaded).

    Weights are read with ``common.safe_pickle`` (full unpickling only with ``trust``) and loaded strictly. Only with
    ``allow_plain_gpt2`` (the start of fine-tuning) may a plain GPT-2 directory (no visual keys) load its GPT-2
    weights, initialise the visual modules and resize the vocabulary to ``vocab_size``. ``partial``
    (``--allow_partial_checkpoint``) loads whatever keys fit, like the original's non-strict ``from_pretrained``,
    and logs the missing ones (they keep their fresh initialisation); wrongly shaped keys stay errors. A directory holding only config + tokenizer gives a randomly initialised model
    (no hub download is possible here).
    """
    from common.checkpoint import CheckpointKeyError, load_state_dict_strict
    from visualcomet.convert import convert_state_dict, read_weights

    directory = resolve_model_dir(directory)
    config = load_config(resolve_model_dir(config_name) if config_name else directory)
    for k, v in (overrides or {}).items():
        setattr(config, k, v)
    weights = next((directory / f for f in WEIGHT_FILES if (directory / f).is_file()), None)
    if weights is None:
        if require_weights:
            raise InputError(directory, "no pytorch_model.bin or model.safetensors in the model directory")
        if vocab_size is not None:
            config.vocab_size = vocab_size
        return VisualCometLMHead(config), False
    if weights.name == "model.safetensors" and _is_published(directory):
        from common.pretrained import read_pretrained

        _, state = read_pretrained(directory, paper=PAPER)  # no pickle on this path
        if "transformer.wte.weight" not in state and "lm_head.weight" in state:  # the tied pair is stored once
            state["transformer.wte.weight"] = state["lm_head.weight"]
    else:
        state = read_weights(weights, trust=trust)
    if state and not any(k.startswith("transformer.") for k in state):
        state = {("transformer." + k if k != "lm_head.weight" else k): v for k, v in state.items()}
    state = convert_state_dict(state, config)
    if "transformer.wte.weight" not in state:
        raise InputError(weights, "missing (the token embedding sets the vocabulary size)",
                         field="transformer.wte.weight")
    config.vocab_size = int(state["transformer.wte.weight"].shape[0])
    model = VisualCometLMHead(config)
    if partial:
        report = load_state_dict_strict(model, state, strict=False, source=weights)
        if report.mismatched:
            raise CheckpointKeyError(weights, f"{report.summary()}: {report.details()}")
        if not report.ok:
            log.warning("%s: %s; --allow_partial_checkpoint: the missing keys keep their fresh initialisation (%s)",
                        weights, report.summary(), report.details())
    elif any(k.startswith("transformer.detector.") for k in state):
        load_state_dict_strict(model, state, strict=True, source=weights)
    elif not allow_plain_gpt2:
        raise InputError(weights, "no VisualCOMET visual-projection weights (transformer.detector.*): a plain GPT-2 "
                                  "checkpoint can only start a fine-tuning run", field="transformer.detector")
    else:  # hub-style GPT-2: every GPT-2 key must fit; the visual modules keep their fresh initialisation
        report = load_state_dict_strict(model, state, strict=False, source=weights)
        bad = report.unexpected + [k for k, _, _ in report.mismatched] + [
            k for k in report.missing if not k.startswith(("transformer.detector.", "transformer.subject_embed."))]
        if bad:
            raise InputError(weights, f"does not fit a GPT-2 model: {bad[:10]}")
    model.tie_weights()
    if vocab_size is not None and vocab_size != config.vocab_size:
        model.resize_token_embeddings(vocab_size, mean_resizing=False)
        model.config.vocab_size = vocab_size
    return model, True
