"""Absolute boxes <id>.npy -> relative [x1/W, y1/H, x2/W, y2/H] (float64, clipped to [0, 1]) for the ORT model (spec 2.6)."""
from __future__ import annotations

import argparse
from typing import Sequence

from common.errors import run_cli
from common.threads import add_num_threads_flag, apply_num_threads
from spatial_captioning.features import prepro_bbox_relative_coords


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags of ORT's prepro_bbox_relative_coords.py and run it."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--input_json", default="/mydisk/Data/captioning_data/dataset_coco.json",
                   help="Karpathy json (cocoid -> filepath/filename; width/height used when no --image_root)")
    p.add_argument("--image_root", default="/mydisk/Data/captioning_data/coco", help="root of train2014/ val2014/")
    p.add_argument("--input_box_dir", default="/mydisk/Data/captioning_data/cocobu_adaptive_box",
                   help="absolute boxes <id>.npy (make_bu_data's _box)")
    p.add_argument("--output_dir", default="/mydisk/Data/captioning_data/zcocobu_adaptive_box_relative",
                   help="where the relative boxes go")
    add_num_threads_flag(p)
    args = p.parse_args(argv)
    apply_num_threads(args.num_threads)
    prepro_bbox_relative_coords(args.input_json, args.image_root, args.input_box_dir, args.output_dir)
    return 0


if __name__ == "__main__":
    run_cli(main)
