"""Draw images with their numbered people, the event and place, and generated intent/before/after inferences.

    python scripts/visualize.py --gens_file <model>/val_sample_1_num_5_top_k_0_top_p_0.9.json --data_dir <ann> \\
        --out_png vis.png
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common.errors import InputError, run_cli
from common.threads import add_num_threads_flag, apply_num_threads


def build_parser() -> argparse.ArgumentParser:
    """Flags of the visualiser."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gens_file", required=True, help="output JSON of run_generation.py")
    p.add_argument("--data_dir", required=True, help="annotation directory (for the default --vcr_images_dir)")
    p.add_argument("--vcr_images_dir", default=None, help="VCR vcr1images/ root (images optional: a grey canvas of "
                                                          "the image size is drawn when the .jpg is absent)")
    p.add_argument("--out_png", required=True, help="PNG to write")
    p.add_argument("--num_images", type=int, default=2, help="how many annotations to draw")
    p.add_argument("--max_gens", type=int, default=3, help="generations shown per relation")
    p.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    add_num_threads_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags and write the PNG."""
    args = build_parser().parse_args(argv)
    apply_num_threads(args.num_threads)
    from visualcomet import data as vdata
    from visualcomet.evaluation import read_json_list
    from visualcomet.visualize import visualize

    if Path(args.out_png).exists() and not args.overwrite:
        raise InputError(args.out_png, "exists; pass --overwrite to replace it")
    gens = read_json_list(args.gens_file, "generations file")
    if not gens:
        raise InputError(args.gens_file, "no generations to draw")
    paths = vdata.DataPaths.resolve(args.data_dir, args.vcr_images_dir)
    out = visualize(gens, paths.images_dir, args.out_png, args.num_images, args.max_gens)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
