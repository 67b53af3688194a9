"""Document frequencies of reference n-grams for the CIDEr-D reward: <output_pkl>-words.p / -idxs.p (spec 2.2)."""
from __future__ import annotations

import argparse
from typing import Sequence

from common.errors import run_cli
from common.threads import add_num_threads_flag, apply_num_threads
from spatial_captioning.captions import prepro_ngrams


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags of prepro_ngrams.py and run it."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--input_json", default="/home-nfs/rluo/rluo/nips/code/prepro/dataset_coco.json",
                   help="input Karpathy json (dataset_coco.json)")
    p.add_argument("--dict_json", default="data/cocotalk.json", help="cocotalk.json providing ix_to_word")
    p.add_argument("--output_pkl", default="data/coco-all", help="output prefix: <prefix>-words.p, <prefix>-idxs.p")
    p.add_argument("--split", default="all", help="train (with restval), val, test or all")
    add_num_threads_flag(p)
    args = p.parse_args(argv)
    apply_num_threads(args.num_threads)
    prepro_ngrams(args.input_json, args.dict_json, args.output_pkl, args.split)
    return 0


if __name__ == "__main__":
    run_cli(main)
