"""Original checkpoint layout -> this implementation, and the key check against the released key list.

The original saved ``{'epoch', 'state_dict', 'optimizer', 'best_acc1'}`` from an ``nn.DataParallel``
model, so every weight key starts with ``module.`` (spec 6). Our parameter names are the original
ones, so conversion is: strip an optional ``module.`` prefix, check the keys strictly.

``python -m set_abstraction.convert --to_safetensors SRC.pth.tar DST_DIR`` writes the publishable layout
(config.json + model.safetensors + README.md card) that ``AbstractionEmbeddingModule.from_pretrained``
reads without unpickling anything.

``python -m set_abstraction.convert --check-keys tests/fixtures/set_abstraction_state_dict_keys.txt``
builds the model at the released configuration on the meta device (no real weights), synthesises a
state dict with the listed shapes for every dataset section of the file, converts and loads it strictly.
"""
from __future__ import annotations

import argparse
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from common.checkpoint import load_checkpoint_file, load_state_dict_strict, remap_keys
from common.errors import InputError, run_cli
from common.safe_pickle import add_trust_flag
from common.threads import add_num_threads_flag, apply_num_threads
from set_abstraction.backbone import PUBLISHED_KEY_FILE, check_backbone_keys
from set_abstraction.model import AbstractionEmbeddingModule, SAMConfig

DEFAULT_KEY_FILE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "set_abstraction_state_dict_keys.txt"
ORIGINAL_PREFIX = "module."
CHECKPOINT_KEYS = ("epoch", "state_dict", "optimizer", "best_acc1")


def convert_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Strip the DataParallel ``module.`` prefix (when present); names are otherwise unchanged."""
    return remap_keys(state_dict, strip_prefix=ORIGINAL_PREFIX)


def to_original_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Our state dict -> the original's (``module.``-prefixed) layout."""
    return remap_keys(state_dict, add_prefix=ORIGINAL_PREFIX)


def read_original_checkpoint(path: str | Path, trust: bool = False) -> dict[str, Any]:
    """Load a ``*.pth.tar`` of the original layout on CPU; checks the top-level keys test.py needs."""
    ckpt = load_checkpoint_file(path, trust=trust, map_location="cpu")
    if not isinstance(ckpt, Mapping):
        raise InputError(path, f"expected a dict checkpoint, got {type(ckpt).__name__}")
    for key in ("epoch", "state_dict", "best_acc1"):
        if key not in ckpt:
            raise InputError(path, "missing top-level key (original layout: epoch, state_dict, "
                                   "optimizer, best_acc1)", field=key)
    epoch, best = ckpt["epoch"], ckpt["best_acc1"]
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
        raise InputError(path, f"must be a non-negative int, got {epoch!r}", field="epoch")
    if isinstance(best, bool) or not isinstance(best, numbers.Real) or not math.isfinite(best):
        raise InputError(path, f"must be a finite number, got {best!r}", field="best_acc1")
    state_dict = ckpt["state_dict"]
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise InputError(path, "must be a non-empty dict of weight tensors", field="state_dict")
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            kind = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
            raise InputError(path, f"weight {key!r} is {kind}, not a float tensor", field="state_dict")
        if not torch.isfinite(value).all():
            raise InputError(path, f"weight {key!r} holds NaN or inf values", field="state_dict")
    return dict(ckpt)


def load_original_weights(model: torch.nn.Module, path: str | Path, trust: bool = False) -> dict[str, Any]:
    """Load an original checkpoint's weights strictly into ``model``; returns the whole checkpoint dict."""
    ckpt = read_original_checkpoint(path, trust)
    load_state_dict_strict(model, convert_state_dict(ckpt["state_dict"]), strict=True, source=path)
    return ckpt


def infer_config(state_dict: Mapping[str, Any], source: str | Path) -> SAMConfig:
    """Model sizes read off a (converted) state dict's shapes; missing keys are one-line errors."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in state_dict:
            raise InputError(source, "missing weight (cannot read the model sizes without it)", field=key)
        return tuple(state_dict[key].shape)

    max_scale = shape("linear.weight")[1]
    num_relations = len({k.split(".")[1] for k in state_dict if k.startswith("relations.")})
    if num_relations < 1:
        raise InputError(source, "no relation MLP weights", field="relations")
    bottleneck, last_in = shape(f"relations.{num_relations - 1}.relate.1.weight")
    if last_in % max_scale:
        raise InputError(source, f"input width {last_in} is not a multiple of the largest scale {max_scale}",
                         field=f"relations.{num_relations - 1}.relate.1.weight")
    in_features = last_in // max_scale
    scales = []
    for i in range(num_relations):
        width = shape(f"relations.{i}.relate.1.weight")[1]
        if width % in_features:
            raise InputError(source, f"input width {width} is not a multiple of {in_features}",
                             field=f"relations.{i}.relate.1.weight")
        scales.append(width // in_features)
    out_features = shape("relations.0.relate.3.weight")[0]
    return SAMConfig(in_features=in_features, out_features=out_features, num_nodes=shape("last_linear.weight")[0],
                     embedding_dim=shape("embedding_linear.weight")[0], bottleneck_dim=bottleneck, scales=scales)


def to_safetensors(src: str | Path, dst: str | Path, trust: bool = False, results: str | Path | None = None,
                   model_config: str | Path | None = None) -> Path:
    """An original ``*.pth.tar`` (restricted loader) -> a save_pretrained directory; returns ``dst``."""
    dst = Path(dst)
    if (dst.is_dir() and any(dst.iterdir())) or (dst.exists() and not dst.is_dir()):
        raise InputError(dst, "already exists and is not empty; not overwriting")
    ckpt = read_original_checkpoint(src, trust=trust)
    state_dict = convert_state_dict(ckpt["state_dict"])
    config = SAMConfig.from_json(model_config) if model_config else infer_config(state_dict, src)
    model = AbstractionEmbeddingModule.from_config(config)
    load_state_dict_strict(model, state_dict, strict=True, source=src)
    return model.save_pretrained(dst, metrics_file=results,
                                 training_data=f"converted from {Path(src).name} (epoch {ckpt['epoch']}, "
                                               f"best_acc1 {ckpt['best_acc1']})")


def parse_key_file(path: str | Path) -> dict[str, dict[str, tuple[int, ...]]]:
    """Sections of the key file: {dataset: {key: shape}}; kinetics is moments with its stated overrides."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "key file not found")
    base: dict[str, tuple[int, ...]] = {}
    overrides: dict[str, dict[str, tuple[int, ...]]] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if line.startswith("#"):
            match = re.match(r"#\s*(\w+) checkpoint \(num_nodes=\d+\) is identical except:(.*)", line)
            if match:
                pairs = re.findall(r"([\w.]+) \[([\d, ]+)\]", match.group(2))
                overrides[match.group(1).lower()] = {k: tuple(int(x) for x in s.split(",")) for k, s in pairs}
            continue
        if not line.strip():
            continue
        try:
            key, shape = line.split("\t")
            base[key] = tuple(int(x) for x in shape.strip().strip("[]").split(","))
        except ValueError:
            raise InputError(path, f"expected '<key>\\t[<shape>]', got {line!r}", record=f"line {lineno}") from None
    sections = {"moments": base}
    for name, changes in overrides.items():
        sections[name] = {k: changes.get(k, v) for k, v in base.items()}
    return sections


def released_config(dataset: str) -> SAMConfig:
    """The configuration of AbstractionEmbedding_<dataset>_SAM_1-2-3-4_best.pth.tar."""
    return SAMConfig.from_json(dataset)


def check_keys(key_file: str | Path, datasets: Sequence[str] | None = None) -> dict[str, str]:
    """Convert + strictly load a meta-tensor state dict for each section; returns {dataset: 'loaded N/N keys'}."""
    sections = parse_key_file(key_file)
    results = {}
    for dataset in datasets or list(sections):
        if dataset not in sections:
            raise InputError(key_file, f"no section for dataset {dataset!r} (have {', '.join(sections)})")
        with torch.device("meta"):
            model = AbstractionEmbeddingModule.from_config(released_config(dataset))
            original = {k: torch.empty(shape) for k, shape in sections[dataset].items()}
        report = load_state_dict_strict(model, convert_state_dict(original), strict=True,
                                        source=f"{key_file} [{dataset}]")
        results[dataset] = report.summary()
    return results


def build_parser() -> argparse.ArgumentParser:
    """CLI flags."""
    p = argparse.ArgumentParser(prog="python -m set_abstraction.convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check-keys", dest="check_keys", metavar="FILE", nargs="?", const=str(DEFAULT_KEY_FILE),
                   help="key/shape list of the released checkpoints (default: tests/fixtures copy)")
    p.add_argument("--check-backbone-keys", dest="check_backbone_keys", metavar="FILE", nargs="?",
                   const=str(PUBLISHED_KEY_FILE),
                   help="key/shape list of the published Moments/Kinetics 3D ResNet-50 files (default: the "
                        "tests/set_abstraction/fixtures copy): converted and loaded strictly into the backbone")
    p.add_argument("--dataset", nargs="+", default=None, choices=("moments", "kinetics"),
                   help="which key-file sections to check (default: all)")
    p.add_argument("--input", help="original checkpoint (.pth.tar) to convert")
    p.add_argument("--output", help="where to write the converted weights (.safetensors)")
    p.add_argument("--model_config", default=None,
                   help="model sizes of --input (name or JSON path); default: released sizes of --dataset "
                        "(--to_safetensors: read off the checkpoint's shapes)")
    p.add_argument("--to_safetensors", nargs=2, metavar=("SRC", "DST"), default=None,
                   help="original checkpoint SRC -> directory DST with config.json, model.safetensors and a model "
                        "card (AbstractionEmbeddingModule.from_pretrained(DST) reads it without any pickle)")
    p.add_argument("--results", default=None,
                   help="with --to_safetensors: a <name>_results.json of test.py whose numbers go into the card")
    add_trust_flag(p)
    add_num_threads_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """--check-keys FILE, or --input CKPT --output FILE.safetensors."""
    args = build_parser().parse_args(argv)
    apply_num_threads(args.num_threads)
    if args.check_backbone_keys is not None:
        for layout, summary in check_backbone_keys(args.check_backbone_keys).items():
            print(f"resnet3d50 [{layout}]: {summary}")
    elif args.check_keys is None and args.input is None and args.to_safetensors is None:
        raise InputError("convert", "pass --check-keys FILE, --check-backbone-keys FILE, --input CKPT --output "
                                    "FILE or --to_safetensors SRC DST")
    if args.to_safetensors is not None:
        src, dst = args.to_safetensors
        to_safetensors(src, dst, trust=args.trust_checkpoint, results=args.results, model_config=args.model_config)
        print(f"converted {src} -> {dst} (config.json, model.safetensors, README.md)")
    if args.check_keys is not None:
        for dataset, summary in check_keys(args.check_keys, args.dataset).items():
            print(f"{dataset}: {summary}")
    if args.input is not None:
        from safetensors.torch import save_file

        if args.output is None:
            raise InputError("--output", "needed with --input")
        if Path(args.output).exists():
            raise InputError(args.output, "already exists; not overwriting")
        datasets = args.dataset or ["moments"]
        config = SAMConfig.from_json(args.model_config) if args.model_config else released_config(datasets[0])
        model = AbstractionEmbeddingModule.from_config(config)
        ckpt = load_original_weights(model, args.input, args.trust_checkpoint)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.output,
                  metadata={"epoch": str(ckpt["epoch"]), "best_acc1": str(ckpt["best_acc1"])})
        print(f"converted {args.input} (epoch {ckpt['epoch']}) -> {args.output}")
    return 0


if __name__ == "__main__":
    run_cli(main)
