"""Detector weight layouts: ``--check-keys`` a key list against the model, ``--check`` a weight file, or
``--write-random`` a small random file in a released layout (tests and demos).

    python -m common.regions.convert --check-keys tests/fixtures/detectron2_r101_c4_keys.txt
    python -m common.regions.convert --check model_final_a3ec72.pkl --layout detectron2
    python -m common.regions.convert --write-random bottom_up --out runs/demo/bua_tiny.pth
"""
from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from common.checkpoint import load_state_dict_strict
from common.errors import InputError, run_cli
from common.regions import weights as W
from common.safe_pickle import add_trust_flag


def parse_key_file(path: str | Path) -> tuple[str, dict[str, tuple[int, ...]]]:
    """(layout, {name: shape}) of a ``name<TAB>[d1, d2, ...]`` key list whose header names ``# layout: <name>``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "key file not found")
    layout, keys = None, {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if m := re.match(r"#\s*layout:\s*(\S+)", line):
            layout = m.group(1)
        if not line.strip() or line.startswith("#"):
            continue
        m = re.fullmatch(r"(\S+)\s+\[([\d,\s]*)\]", line.strip())
        if m is None:
            raise InputError(path, "expected 'name<TAB>[d1, d2, ...]'", record=lineno)
        if m.group(1) in keys:
            raise InputError(path, f"duplicate key {m.group(1)}", record=lineno)
        keys[m.group(1)] = tuple(int(d) for d in m.group(2).split(",") if d.strip())
    if layout not in W.LAYOUTS:
        raise InputError(path, f"header must name '# layout: <{'|'.join(W.LAYOUTS)}>'", field="layout")
    if not keys:
        raise InputError(path, "no keys")
    return layout, keys


def check_keys(layout: str, keys: dict[str, tuple[int, ...]], source: str = "key file") -> tuple[int, int]:
    """Build the released architecture on the meta device and load a state dict of exactly these keys strictly.

    Returns (loaded parameters, keys in the file). The key list must also imply the released configuration.
    """
    cfg = W.config_from_shapes(keys, layout, source)
    released = W.Detectron2Config() if layout == "detectron2" else W.BottomUpConfig()
    if cfg != released:
        raise InputError(source, f"keys imply {cfg}, not the released configuration {released}")
    with torch.device("meta"):
        model = W.build_detector(cfg)
        state = {k: torch.empty(shape) for k, shape in keys.items()}
    extras = set(W.tolerated_extras(state, layout, source))
    report = load_state_dict_strict(model, {k: v for k, v in state.items() if k not in extras}, strict=True,
                                    source=source)
    return report.loaded + len(extras), len(keys)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: one of --check-keys, --check, --write-random."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check-keys", metavar="KEYS_TXT", help="key list (name<TAB>[shape]) to load strictly")
    mode.add_argument("--check", metavar="WEIGHTS", help="a weight file to read and load strictly")
    mode.add_argument("--write-random", choices=W.LAYOUTS, help="write a random weight file in this layout")
    p.add_argument("--layout", choices=W.LAYOUTS, help="layout of --check (detectron2 .pkl or bottom_up .pth)")
    p.add_argument("--out", help="output file of --write-random")
    p.add_argument("--full_size", action="store_true", help="--write-random: real R101 widths, not tiny ones")
    p.add_argument("--seed", type=int, default=0)
    add_trust_flag(p)
    args = p.parse_args(argv)
    if args.check_keys:
        layout, keys = parse_key_file(args.check_keys)
        loaded, total = check_keys(layout, keys, args.check_keys)
        print(f"{args.check_keys}: {layout} layout, {loaded}/{total} keys map onto the model (strict)")
    elif args.check:
        if not args.layout:
            p.error("--check needs --layout")
        model = W.load_detector(args.check, args.layout, trust=args.trust_checkpoint)
        n = sum(t.numel() for t in model.state_dict().values())
        print(f"{args.check}: {args.layout} layout loads strictly ({n:,} values), config {model.cfg}")
    else:
        if not args.out:
            p.error("--write-random needs --out")
        path = W.write_random_weights(args.out, args.write_random, tiny=not args.full_size, seed=args.seed)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
