"""Grid vectors: each box rasterised onto a g x g grid, row-major with rows along y (spec 2.5; README "Grid Features")."""
from __future__ import annotations

import argparse
from typing import Sequence

from common.errors import run_cli
from common.threads import add_num_threads_flag, apply_num_threads
from spatial_captioning.features import WEIGHTINGS, prepro_areas


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags and write <output_dir>/<id>.npy (K, num_grids) float32."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--input_dir", default="data/cocobu_box", help="per-image boxes <id>.npy, (K, 4) [x1, y1, x2, y2]")
    p.add_argument("--output_dir", default="data/cocobu_box_vec", help="where the grid vectors go")
    p.add_argument("--num_grids", type=int, default=144, help="G = g*g (perfect square)")
    p.add_argument("--input_json", default="",
                   help="cocotalk.json or dataset_coco.json with width/height, to make absolute boxes relative")
    p.add_argument("--image_root", default="", help="read image sizes from the images when the json has none")
    p.add_argument("--weighting", default="cell", choices=list(WEIGHTINGS),
                   help="cell: overlap/cell area; box: overlap/box area")
    p.add_argument("--grid_boxes", type=int, default=0,
                   help="N>0: ResNet grid features (no box files): use the N x N cells of <input_dir>/<id>.npz")
    add_num_threads_flag(p)
    args = p.parse_args(argv)
    apply_num_threads(args.num_threads)
    n = prepro_areas(args.input_dir, args.output_dir, args.num_grids, args.input_json, args.image_root, args.weighting,
                     args.grid_boxes)
    print(f"wrote {n} grid-vector files to {args.output_dir}")
    return 0


if __name__ == "__main__":
    run_cli(main)
