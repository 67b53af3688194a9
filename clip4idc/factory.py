"""Building a CLIP4IDC model from the scripts' flags: CLIP weights (local ViT-B-32.pt or random),
`--init_model` checkpoints in either layout, and the config sidecar saved next to trained weights."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path


from common.checkpoint import CheckpointKeyError
from common.errors import InputError
from clip4idc.convert import load_into, read_model_state_dict
from clip4idc.models import build_model, load_clip_config, load_decoder_config
from clip4idc.models.precision import convert_weights_fp16
from clip4idc.models.config import CLIP_NAMES, ClipConfig, DecoderConfig, clip_config_path, load_cross_initializer_range

CONFIG_SIDECAR = "clip4idc_config.json"
OPENAI_FILES = {"ViT-B/32": "ViT-B-32.pt", "ViT-B/16": "ViT-B-16.pt"}
logger = logging.getLogger("clip4idc")


def openai_search_paths(name: str) -> list[Path]:
    """Where an OpenAI CLIP file for `name` is looked for, in order: modules/ (cwd, package), ~/.cache/clip."""
    fname = OPENAI_FILES.get(name)
    if fname is None:
        return []
    return [base / fname for base in (Path.cwd() / "modules", Path(__file__).resolve().parent / "modules",
                                      Path.home() / ".cache" / "clip")]


def find_openai_weights(name: str) -> Path | None:
    """Local OpenAI CLIP file for `name`: the path itself, modules/<file> (cwd or package), ~/.cache/clip."""
    if os.path.isfile(name) and not name.endswith(".json"):
        return Path(name)
    return next((path for path in openai_search_paths(name) if path.is_file()), None)


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
        path = parent / CONFIG_SIDECAR
        if path.is_file():
            try:
                side = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise InputError(path, f"invalid JSON: {err.msg} (line {err.lineno})") from None
            if not isinstance(side, dict) or not isinstance(side.get("clip"), dict):
                raise InputError(path, "expected an object with the CLIP sizes", field="clip")
            side["_path"] = str(path)
            return side
    return None


# Parameters of the pair encoder that OpenAI's CLIP does not have (spec 4.3): new in every run.
PAIR_PARAMS = ("clip.visual.joint_positional_embedding", "clip.visual.bef_embedding", "clip.visual.aft_embedding",
               "clip.visual.ln_mid.")


def _clip_source(args, intra: int, patch: str, log: logging.Logger):
    """(clip_cfg, OpenAI state dict or None, why there are no weights and what to do, or None)."""
    name = args.pretrained_clip_name
    if clip_config_path(name) is not None and name not in CLIP_NAMES:
        return (load_clip_config(name, intra_layers=intra, linear_patch=patch), None,
                f"{name} is a size configuration without pretrained weights: pass --random_clip_weights to train "
                "from random CLIP weights")
    weights = find_openai_weights(name)
    if weights is not None:
        clip_state = read_model_state_dict(weights, trust=getattr(args, "trust_checkpoint", False))
        log.info("CLIP weights loaded from %s", weights)
        try:
            return infer_clip_config(clip_state, intra, patch), clip_state, None
        except KeyError as err:
            raise InputError(weights, "not an OpenAI CLIP state dict", field=str(err.args[0])) from None
    if name in CLIP_NAMES:
        searched = ", ".join(str(p) for p in openai_search_paths(name))
        return (load_clip_config(name, intra_layers=intra, linear_patch=patch), None,
                f"no {OPENAI_FILES[name]} found (searched {searched}; nothing is downloaded, spec 9.20): put it in "
                "one of those places, pass its path as --pretrained_clip_name, or pass --random_clip_weights to "
                "train from random CLIP weights")
    raise InputError(name, "unknown --pretrained_clip_name: use ViT-B/32, ViT-B/16, "
                     "a config name from clip4idc/configs (e.g. tiny) or a local OpenAI .pt file")


def load_init_model(model, path: str | Path, stage: str, partial: bool = False, trust: bool = False,
                    training: bool = True, log: logging.Logger = logger) -> set[str]:
    """Load an --init_model file into `model` strictly; returns the names of the model tensors it set.

    Two mismatches are the original's own recipe and are accepted, and logged: a stage-1 (retrieval)
    file has no decoder at all when it starts stage-2 training (not when only evaluating: that would
    caption with a random decoder), and a stage-2 file's decoder is not used by stage 1. Anything else
    missing or left over is an error unless `partial` (--init_model_partial).
    """
    sd = read_model_state_dict(path, trust=trust)
    own = model.state_dict()
    expected_missing: set[str] = set()
    if stage == "caption" and training and not any(k.startswith("decoder.") for k in sd):
        expected_missing = {k for k in own if k.startswith("decoder.")}
        log.info("--init_model %s holds no caption decoder (a stage-1 checkpoint): the decoder's %d tensors "
                 "start from their initialisation, as in the original's IDC fine-tuning", path, len(expected_missing))
    unused_decoder = [k for k in sd if k.startswith("decoder.")] if stage == "retrieval" else []
    if unused_decoder:
        log.info("--init_model %s holds a caption decoder (%d tensors), which the retrieval stage does not use",
                 path, len(unused_decoder))
        sd = {k: v for k, v in sd.items() if not k.startswith("decoder.")}
    report = load_into(model, sd, strict=False, source=str(path))
    if report.mismatched:
        raise CheckpointKeyError(path, f"shape mismatch with the model: {report.details(limit=5)}")
    missing = [k for k in report.missing if k not in expected_missing]
    if (missing or report.unexpected) and not partial:
        what = "; ".join(part for part in (f"missing {len(missing)}: {', '.join(missing[:5])}" if missing else "",
                                           f"unexpected {len(report.unexpected)}: {', '.join(report.unexpected[:5])}"
                                           if report.unexpected else "") if part)
        raise CheckpointKeyError(path, f"does not fit the {stage} model ({what}); pass --init_model_partial to "
                                       "load it anyway, leaving the missing tensors at their initialisation",
                                 field=(missing or report.unexpected)[0])
    log.info("Weights from %s: %d/%d loaded", path, report.loaded, report.total)
    if missing:
        log.warning("--init_model_partial: %d tensors of %s not in %s keep their initialisation: %s", len(missing),
                    type(model).__name__, path, missing)
    if report.unexpected:
        log.warning("--init_model_partial: tensors of %s not used by %s: %s", path, type(model).__name__,
                    report.unexpected)
    return {k for k in own if k not in report.missing}


def create_model(args, stage: str, log: logging.Logger = logger):
    """(model, clip_cfg, decoder_cfg) from the flags: CLIP weights, then --init_model (checkpoint keys win).

    CLIP tensors that neither ViT-B-32.pt nor --init_model provides are an error unless
    --random_clip_weights (the original downloads the OpenAI file; nothing is downloaded here)."""
    intra, patch = args.intra_num_hidden_layers, args.linear_patch
    clip_cfg, clip_state, no_weights = _clip_source(args, intra, patch, log)
    random_ok = getattr(args, "random_clip_weights", False)
    if no_weights is not None and not random_ok and not args.init_model:
        raise InputError(args.pretrained_clip_name, no_weights, field="--pretrained_clip_name")
    decoder_cfg = load_decoder_config(args.decoder_model) if stage == "caption" else None
    init_range = load_cross_initializer_range(args.cross_model)
    for key, value in dataclasses.asdict(clip_cfg).items():
        log.info("\t %s: %s", key, value)
    model = build_model(clip_cfg, decoder_cfg, stage, initializer_range=init_range)
    if clip_state is not None:
        report = load_into(model, clip_state, strict=False, source="CLIP weights")
        log.info("CLIP weights: %d/%d tensors loaded; not in the file: %s", report.loaded, report.total,
                 [k for k in report.missing if k.startswith("clip.")])
    loaded: set[str] = set()
    if args.init_model:
        loaded = load_init_model(model, args.init_model, stage, partial=getattr(args, "init_model_partial", False),
                                 trust=getattr(args, "trust_checkpoint", False),
                                 training=getattr(args, "do_train", True), log=log)
    if no_weights is not None:
        random = [k for k in model.state_dict() if k.startswith("clip.") and k not in loaded
                  and not k.startswith(PAIR_PARAMS)]
        if random and not random_ok:
            raise InputError(args.pretrained_clip_name, f"--init_model lacks {len(random)} CLIP tensors (e.g. "
                             f"{random[0]}) and {no_weights}", field="--pretrained_clip_name")
        if random:
            log.warning("--random_clip_weights: %d CLIP tensors are RANDOM (no OpenAI weights for %s)", len(random),
                        args.pretrained_clip_name)
    if getattr(args, "faithful_fp16", False):
        log.info("faithful fp16: %d CLIP tensors cast to float16 (spec 5.6)", convert_weights_fp16(model))
    return model, clip_cfg, decoder_cfg


def model_from_checkpoint(path: str | Path, trust: bool = False, intra_layers: int | None = None,
                          decoder_model: str | None = None, device: str = "cpu"):
    """(caption model, max_words) rebuilt from a saved state dict (+ sidecar config when present), or from a
    save_pretrained directory (config.json + model.safetensors: no pickle involved)."""
    if Path(path).is_dir() and (Path(path) / "config.json").is_file():
        from clip4idc.models import CLIP4IDC

        model = CLIP4IDC.from_pretrained(path)
        if model.decoder is None:
            raise InputError(path, "holds a retrieval-stage model, which cannot caption", field="stage")
        config = json.loads((Path(path) / "config.json").read_text())
        return model.to(device).eval(), config.get("max_words") or 32
    sd = read_model_state_dict(path, trust=trust)
    side = read_config_sidecar(path)
    if side is not None:
        try:
            clip_cfg = ClipConfig(**side["clip"])
            decoder_cfg = DecoderConfig(**side["decoder"]) if side.get("decoder") else None
        except TypeError as err:
            raise InputError(side["_path"], f"sizes do not fit this code ({err})") from None
        if intra_layers is not None:
            clip_cfg.intra_layers = intra_layers
        max_words = side.get("max_words", 32)
    else:
        try:
            clip_cfg = infer_clip_config(sd, intra_layers if intra_layers is not None else 9, "2d")
        except KeyError as err:
            raise CheckpointKeyError(path, "not a CLIP4IDC state dict (tensor missing)",
                                     field=str(err.args[0])) from None
        decoder_cfg = load_decoder_config(decoder_model or "decoder-base")
        max_words = 32
    if decoder_model is not None and side is not None and side.get("decoder") is None:
        decoder_cfg = load_decoder_config(decoder_model)
    if decoder_cfg is None or not any(k.startswith("decoder.") for k in sd):
        raise InputError(path, "has no caption decoder weights (a retrieval-stage checkpoint cannot caption)")
    model = build_model(clip_cfg, decoder_cfg, "caption")
    load_into(model, sd, strict=True, source=str(path))
    return model.to(device).eval(), max_words
