"""Original checkpoint layout -> this implementation (spec 6.3).

The module names here are the original's, so conversion only unwraps `{'model': ...}` style containers and
DataParallel `module.` prefixes; ORT's released checkpoints use the `ort` model's names. `--check-keys FILE`
builds the model the key file describes (default: the README spatial_pe config) on the meta device,
synthesises a state dict with the listed shapes, converts and loads it strictly.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping, Sequence

import torch

from common.checkpoint import (CheckpointKeyError, extract_state_dict, load_checkpoint_file, load_state_dict_strict,
                               remap_keys)
from common.errors import InputError, run_cli
from common.safe_pickle import add_trust_flag

DEFAULT_KEY_FILE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "spatial_captioning_state_dict_keys.txt"


def convert_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Original (HEAD, README or ORT) checkpoint object -> state dict with this implementation's keys."""
    sd = extract_state_dict(obj) if not all(isinstance(v, torch.Tensor) for v in obj.values()) else dict(obj)
    return remap_keys(sd, strip_prefix="module.")


def read_key_file(path: str | Path) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) pairs of a `name<TAB>[d0, d1]` key file; comment lines start with '#'."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "key file not found")
    out = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        try:
            name, shape = line.split("\t")
            dims = tuple(int(x) for x in re.findall(r"\d+", shape))
        except ValueError:
            raise InputError(path, "expected 'name<TAB>[shape]'", record=line_no) from None
        out.append((name, dims))
    if not out:
        raise InputError(path, "no keys listed")
    return out


def infer_config(shapes: Mapping[str, Sequence[int]]) -> SimpleNamespace:
    """The model options a state dict's keys and shapes describe (spatial_pe/transformer variants or ORT)."""
    from spatial_captioning.models import load_config

    is_ort = any(".WGs." in k for k in shapes)
    cfg = load_config("relation_transformer" if is_ort else "spatial_pe")
    # missing keys keep the default config's value; the strict load then reports them
    E, D = shapes.get("att_embed.0.weight", (cfg.input_encoding_size, cfg.img_feat_size))
    cfg.input_encoding_size, cfg.img_feat_size = int(E), int(D)
    cfg.vocab_size = int(shapes.get("model.generator.proj.weight", (cfg.vocab_size + 1,))[0]) - 1
    layers = {int(m.group(1)) for k in shapes if (m := re.match(r"model\.encoder\.layers\.(\d+)\.", k))}
    cfg.num_layers = max(layers) + 1 if layers else 0
    ff_key = "model.encoder.layers.0.feed_forward.w_1.weight" if is_ort else "model.encoder.layers.0.feed_forward.fc.0.weight"
    cfg.ff_size = int(shapes.get(ff_key, (cfg.ff_size,))[0])
    if is_ort:
        cfg.box_trignometric_embedding = int(shapes.get("model.encoder.layers.0.self_attn.WGs.0.weight", (1, 64))[1]) == 64
        return cfg
    if any(k.endswith("norm.scale") for k in shapes):
        cfg.norm = "RMS"
    cfg.cross_attn = "dot-product" if "model.decoder.layers.0.cross_attn.linears.0.weight" in shapes else "xlinear"
    src = {k[len("model.src_embed."):]: v for k, v in shapes.items() if k.startswith("model.src_embed.")}
    cfg.use_grid = bool(src)
    cfg.caption_model = "spatial_pe" if src else "transformer"
    if "pe1" in src:
        cfg.enc_pos_embedding = False
        cfg.num_grids = int(src["pe1"][0]) ** 2
    elif "fc1.weight" in src:
        cfg.enc_pos_type = "gxg"
        cfg.num_grids = int(src["fc1.weight"][1]) ** 2
    elif "fc.weight" in src:
        cfg.enc_pos_type = "g2"
        cfg.num_grids = int(src["fc.weight"][1])
    elif "fc.0.weight" in src:
        cfg.enc_pos_type = "box-coord"
    return cfg


def check_keys(key_file: str | Path, verbose: bool = True) -> int:
    """Build the described model on meta, load a synthesised original-layout state dict strictly; 0 if all keys fit."""
    from spatial_captioning.models import build_on_meta

    pairs = read_key_file(key_file)
    shapes = dict(pairs)
    cfg = infer_config(shapes)
    model = build_on_meta(cfg)
    original = {name: torch.empty(shape, device="meta") for name, shape in pairs}
    converted = convert_state_dict(original)
    try:
        report = load_state_dict_strict(model, converted, strict=True, source=key_file, assign=True)
    except CheckpointKeyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if verbose:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"model: {cfg.caption_model} ({n_params:,} parameters)")
        print(report.summary())
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: --check-keys FILE, or --input original.pth --output converted.pth."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check-keys", dest="check_keys", nargs="?", const=str(DEFAULT_KEY_FILE), default=None,
                        help="key file (name<TAB>shape); default: tests/fixtures/spatial_captioning_state_dict_keys.txt")
    parser.add_argument("--input", default=None, help="original checkpoint (model.pth / model-best.pth) to convert")
    parser.add_argument("--output", default=None, help="where to write the converted state dict")
    add_trust_flag(parser)
    args = parser.parse_args(argv)
    if args.check_keys:
        return check_keys(args.check_keys)
    if not (args.input and args.output):
        parser.error("give --check-keys FILE, or both --input and --output")
    if Path(args.output).exists():
        raise InputError(args.output, "already exists (never overwritten silently)")
    sd = convert_state_dict(load_checkpoint_file(args.input, trust=args.trust_checkpoint))
    cfg = infer_config({k: tuple(v.shape) for k, v in sd.items()})
    from spatial_captioning.models import build_on_meta

    report = load_state_dict_strict(build_on_meta(cfg), sd, strict=True, source=args.input, assign=True)
    torch.save(sd, args.output)
    print(f"{report.summary()}; wrote {args.output}")
    return 0


if __name__ == "__main__":
    run_cli(main)
