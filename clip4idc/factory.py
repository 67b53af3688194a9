"""Building a CLIP4IDC model from the scripts' flags: CLIP weights (local ViT-B-32.pt or random),
`--init_model` checkpoints in either layout, and the config sidecar saved next to trained weights."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path


from common.errors import InputError
from clip4idc.convert import load_into, read_state_dict, to_model_layout
from clip4idc.models import build_model, load_clip_config, load_decoder_config
from clip4idc.models.precision import convert_weights_fp16
from clip4idc.models.config import CLIP_NAMES, ClipConfig, DecoderConfig, clip_config_path, load_cross_initializer_range

CONFIG_SIDECAR = "clip4idc_config.json"
OPENAI_FILES = {"ViT-B/32": "ViT-B-32.pt", "ViT-B/16": "ViT-B-16.pt"}
logger = logging.getLogger("clip4idc")


def find_openai_weights(name: str) -> Path | None:
    """Local OpenAI CLIP file for `name`: the path itself, modules/<file> (cwd or package), ~/.cache/clip."""
    if os.path.isfile(name) and not name.endswith(".json"):
        return Path(name)
    fname = OPENAI_FILES.get(name)
    if fname is None:
        return None
    for base in (Path.cwd() / "modules", Path(__file__).resolve().parent / "modules", Path.home() / ".cache" / "clip"):
        if (base / fname).is_file():
            return base / fname
    return None


def infer_clip_config(sd: dict, intra_layers: int, linear_patch: str) -> ClipConfig:
    """CLIP sizes read off a state dict in this implementation's names (as the original's get_config)."""
    def count(pattern: str) -> int:
        return len({m.group(1) for k in sd if (m := re.match(pattern, k))})

    width = sd["clip.visual.embeddings.patch_embedding.weight"].shape[0]
    patch = sd["clip.visual.embeddings.patch_embedding.weight"].shape[-1]
    grid = round((sd["clip.visual.embeddings.position_embedding.weight"].shape[0] - 1) ** 0.5)
    text_width = sd["clip.text.final_layer_norm.weight"].shape[0]
    return ClipConfig(
        embed_dim=sd["clip.text.text_projection.weight"].shape[0], image_resolution=patch * grid,
        vision_layers=count(r"clip\.visual\.layers\.(\d+)\."), vision_width=width, vision_patch_size=patch,
        context_length=sd["clip.text.embeddings.position_embedding.weight"].shape[0],
        vocab_size=sd["clip.text.embeddings.token_embedding.weight"].shape[0], transformer_width=text_width,
        transformer_heads=max(text_width // 64, 1), transformer_layers=count(r"clip\.text\.layers\.(\d+)\."),
        intra_layers=intra_layers, linear_patch=linear_patch)


def save_config_sidecar(directory: str | Path, clip_cfg: ClipConfig, decoder_cfg: DecoderConfig | None,
                        max_words: int) -> Path:
    """Write clip4idc_config.json (sizes needed to rebuild the model from a saved state dict)."""
    path = Path(directory) / CONFIG_SIDECAR
    data = {"clip": dataclasses.asdict(clip_cfg), "max_words": max_words,
            "decoder": dataclasses.asdict(decoder_cfg) if decoder_cfg else None}
    path.write_text(json.dumps(data, indent=2))
    return path


def read_config_sidecar(checkpoint: str | Path) -> dict | None:
    """The sidecar next to a checkpoint file (or in a checkpoint's parent directories), if any."""
    for parent in list(Path(checkpoint).resolve().parents)[:3]:
        if (parent / CONFIG_SIDECAR).is_file():
            return json.loads((parent / CONFIG_SIDECAR).read_text())
    return None


def create_model(args, stage: str, log: logging.Logger = logger):
    """(model, clip_cfg, decoder_cfg) from the flags: CLIP weights, then --init_model (checkpoint keys win)."""
    intra, patch = args.intra_num_hidden_layers, args.linear_patch
    clip_state = None
    if clip_config_path(args.pretrained_clip_name) is not None and args.pretrained_clip_name not in CLIP_NAMES:
        clip_cfg = load_clip_config(args.pretrained_clip_name, intra_layers=intra, linear_patch=patch)
    else:
        weights = find_openai_weights(args.pretrained_clip_name)
        if weights is not None:
            clip_state = to_model_layout(read_state_dict(weights, trust=getattr(args, "trust_checkpoint", False)))
            clip_cfg = infer_clip_config(clip_state, intra, patch)
            log.info("CLIP weights loaded from %s", weights)
        elif args.pretrained_clip_name in CLIP_NAMES:
            clip_cfg = load_clip_config(args.pretrained_clip_name, intra_layers=intra, linear_patch=patch)
            log.warning("no local %s found (modules/, ~/.cache/clip); CLIP weights are RANDOM (no download, "
                        "spec 9.20)", OPENAI_FILES[args.pretrained_clip_name])
        else:
            raise InputError(args.pretrained_clip_name, "unknown --pretrained_clip_name: use ViT-B/32, ViT-B/16, "
                             "a config name from clip4idc/configs (e.g. tiny) or a local OpenAI .pt file")
    decoder_cfg = load_decoder_config(args.decoder_model) if stage == "caption" else None
    init_range = load_cross_initializer_range(args.cross_model)
    for key, value in dataclasses.asdict(clip_cfg).items():
        log.info("\t %s: %s", key, value)
    model = build_model(clip_cfg, decoder_cfg, stage, initializer_range=init_range)
    if clip_state is not None:
        report = load_into(model, clip_state, strict=False, source="CLIP weights")
        log.info("CLIP weights: %d/%d tensors loaded; not in the file: %s", report.loaded, report.total,
                 [k for k in report.missing if k.startswith("clip.")])
    if args.init_model:
        sd = read_state_dict(args.init_model, trust=getattr(args, "trust_checkpoint", False))
        report = load_into(model, sd, strict=False, source=args.init_model)
        if report.mismatched:
            raise InputError(args.init_model, f"shape mismatch with the model: {report.details(limit=5)}")
        log.info("Weights from %s: %d/%d loaded", args.init_model, report.loaded, report.total)
        if report.missing:
            log.info("Weights of %s not initialized from pretrained model: %s", type(model).__name__, report.missing)
        if report.unexpected:
            log.info("Weights from pretrained model not used in %s: %s", type(model).__name__, report.unexpected)
    if getattr(args, "faithful_fp16", False):
        log.info("faithful fp16: %d CLIP tensors cast to float16 (spec 5.6)", convert_weights_fp16(model))
    return model, clip_cfg, decoder_cfg


def model_from_checkpoint(path: str | Path, trust: bool = False, intra_layers: int | None = None,
                          decoder_model: str | None = None, device: str = "cpu"):
    """(caption model, max_words) rebuilt from a saved state dict (+ sidecar config when present)."""
    sd = to_model_layout(read_state_dict(path, trust=trust))
    side = read_config_sidecar(path)
    if side is not None:
        clip_cfg = ClipConfig(**side["clip"])
        if intra_layers is not None:
            clip_cfg.intra_layers = intra_layers
        decoder_cfg = DecoderConfig(**side["decoder"]) if side.get("decoder") else None
        max_words = side.get("max_words", 32)
    else:
        clip_cfg = infer_clip_config(sd, intra_layers if intra_layers is not None else 9, "2d")
        decoder_cfg = load_decoder_config(decoder_model or "decoder-base")
        max_words = 32
    if decoder_model is not None and side is not None and side.get("decoder") is None:
        decoder_cfg = load_decoder_config(decoder_model)
    if decoder_cfg is None or not any(k.startswith("decoder.") for k in sd):
        raise InputError(path, "has no caption decoder weights (a retrieval-stage checkpoint cannot caption)")
    model = build_model(clip_cfg, decoder_cfg, "caption")
    load_into(model, sd, strict=True, source=str(path))
    return model.to(device).eval(), max_words
