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

from common.checkpoint import (CheckpointKeyError, atomic_torch_save, extract_state_dict, load_checkpoint_file,
                               load_state_dict_strict, remap_keys)
from common.errors import InputError, run_cli
from common.safe_pickle import add_trust_flag
from common.threads import add_num_threads_flag, apply_num_threads

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


def to_safetensors(src: str | Path, dst: str | Path, infos_path: str | Path | None = None,
                   metrics_file: str | Path | None = None, trust: bool = False) -> Path:
    """An original/released model.pth (read with the restricted loader) -> save_pretrained directory `dst`.

    The architecture comes from the run's infos pickle when given (heads, dropout, seq_length, UNK index ...),
    otherwise from the weights' shapes with the README defaults for what shapes cannot tell.
    """
    from spatial_captioning import models

    dst = Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise InputError(dst, "already exists and is not empty (never overwritten silently)")
    obj = load_checkpoint_file(src, trust=trust)
    if not isinstance(obj, Mapping):
        raise InputError(src, f"holds a {type(obj).__name__}, not a state dict")
    try:
        sd = convert_state_dict(obj)
    except ValueError as err:
        raise InputError(src, str(err)) from None
    for key, value in sd.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise InputError(src, "weights contain NaN or inf", field=key)
    cfg = infer_config({k: tuple(v.shape) for k, v in sd.items()})
    if infos_path is not None:
        from spatial_captioning.checkpoints import load_infos
        from spatial_captioning.data import unk_index

        infos = load_infos(infos_path, trust=trust)
        if "opt" not in infos:
            raise InputError(infos_path, "infos lacks it (spec 6.2)", field="opt")
        cfg = SimpleNamespace(**{**vars(cfg), **{k: v for k, v in infos["opt"].items()
                                                 if k in models.CONFIG_KEYS and v is not None}})
        if "vocab" in infos:
            cfg.unk_index = unk_index(infos["vocab"])
    try:
        model = models.setup(cfg)
    except ValueError as err:
        raise InputError(infos_path or src, f"cannot build the model it describes: {err}") from None
    load_state_dict_strict(model, sd, strict=True, source=src)
    model.save_pretrained(dst, metrics_file=metrics_file)
    return dst


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: --check-keys FILE, --input original.pth --output converted.pth, or --to_safetensors SRC DST."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check-keys", dest="check_keys", nargs="?", const=str(DEFAULT_KEY_FILE), default=None,
                        help="key file (name<TAB>shape); default: tests/fixtures/spatial_captioning_state_dict_keys.txt")
    parser.add_argument("--input", default=None, help="original checkpoint (model.pth / model-best.pth) to convert")
    parser.add_argument("--output", default=None, help="where to write the converted state dict")
    parser.add_argument("--to_safetensors", nargs=2, metavar=("SRC", "DST"), default=None,
                        help="write SRC (model.pth, read with the restricted loader) as the publishable directory DST: "
                             "config.json + model.safetensors + README.md model card (CaptionModel.from_pretrained)")
    parser.add_argument("--infos_path", default=None,
                        help="with --to_safetensors: the run's infos_<id>.pkl (architecture, UNK index); default: "
                             "inferred from the weights' shapes")
    parser.add_argument("--metrics_file", default=None,
                        help="with --to_safetensors: eval_results/<id>_<split>.json whose scores go into the card")
    add_trust_flag(parser)
    add_num_threads_flag(parser)
    args = parser.parse_args(argv)
    apply_num_threads(args.num_threads)
    if args.check_keys:
        return check_keys(args.check_keys)
    if args.to_safetensors:
        src, dst = args.to_safetensors
        to_safetensors(src, dst, args.infos_path, args.metrics_file, trust=args.trust_checkpoint)
        print(f"wrote {dst} (config.json, model.safetensors, README.md)")
        return 0
    if not (args.input and args.output):
        parser.error("give --check-keys FILE, --to_safetensors SRC DST, or both --input and --output")
    if Path(args.output).exists():
        raise InputError(args.output, "already exists (never overwritten silently)")
    sd = convert_state_dict(load_checkpoint_file(args.input, trust=args.trust_checkpoint))
    cfg = infer_config({k: tuple(v.shape) for k, v in sd.items()})
    from spatial_captioning.models import build_on_meta

    report = load_state_dict_strict(build_on_meta(cfg), sd, strict=True, source=args.input, assign=True)
    atomic_torch_save(sd, args.output)
    print(f"{report.summary()}; wrote {args.output}")
    return 0


if __name__ == "__main__":
    run_cli(main)
