"""Karpathy dataset_coco.json -> cocotalk.json (vocab + images) and cocotalk_label.h5 (spec 2.1)."""
from __future__ import annotations

import argparse
from typing import Sequence

from common.errors import run_cli
from common.threads import add_num_threads_flag, apply_num_threads
from spatial_captioning.captions import prepro_labels


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags of ORT's prepro_labels.py and run it."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--input_json", required=True, help="input json file to process into hdf5 (dataset_coco.json)")
    p.add_argument("--output_json", default="data.json", help="output json file")
    p.add_argument("--output_h5", default="data", help="output h5 prefix: writes <prefix>_label.h5")
    p.add_argument("--images_root", default="",
                   help="root location in which images are stored, to be prepended to file_path (records width/height)")
    p.add_argument("--max_length", default=16, type=int, help="max length of a caption, in number of words")
    p.add_argument("--word_count_threshold", default=5, type=int, help="only words that occur more than this go in the vocab")
    add_num_threads_flag(p)
    args = p.parse_args(argv)
    apply_num_threads(args.num_threads)
    prepro_labels(args.input_json, args.output_json, args.output_h5, args.max_length, args.word_count_threshold,
                  args.images_root)
    return 0


if __name__ == "__main__":
    run_cli(main)
