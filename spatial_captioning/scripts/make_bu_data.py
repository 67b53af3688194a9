"""Bottom-up TSVs (trainval.zip) -> <out>_att/<id>.npz, <out>_fc/<id>.npy, <out>_box/<id>.npy (spec 2.4; py3 reader)."""
from __future__ import annotations

import argparse
from typing import Sequence

from common.errors import run_cli
from common.threads import add_num_threads_flag, apply_num_threads
from spatial_captioning.features import make_bu_data


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags of make_bu_data.py and run it."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--downloaded_feats", default="data/bu_data", help="directory containing trainval/ of trainval.zip")
    p.add_argument("--output_dir", default="data/cocobu", help="output prefix of the _att/_fc/_box directories")
    add_num_threads_flag(p)
    args = p.parse_args(argv)
    apply_num_threads(args.num_threads)
    n = make_bu_data(args.downloaded_feats, args.output_dir)
    print(f"wrote {n} images")
    return 0


if __name__ == "__main__":
    run_cli(main)
