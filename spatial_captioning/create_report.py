"""HTML report comparing runs: `python create_report.py --pickles A.pkl B.pkl --run_names a b --out_dir R` (spec 2.8b)."""
from __future__ import annotations

import argparse
import time
from typing import Sequence

from common.errors import InputError, run_cli
from common.safe_pickle import add_trust_flag
from common.threads import add_num_threads_flag, apply_num_threads
from spatial_captioning.report import load_report_pickle, write_report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The original's flags."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pickles", nargs="+", required=True,
                   help="eval_results/<id>_<split>_report_data.pkl files written by eval.py (--language_eval 1 "
                        "with --image_root); ORT's pickles are read too")
    p.add_argument("--run_names", nargs="+", required=True, help="one display name per pickle, in the same order")
    p.add_argument("--out_dir", required=True, help="report directory to create; refused if it already exists")
    p.add_argument("--add_time", dest="add_time", action="store_true",
                   help="append _%%Y-%%m-%%d--%%H_%%M_%%S to --out_dir")
    p.add_argument("--no_add_time", dest="add_time", action="store_false", help="do not append the time (default)")
    p.set_defaults(add_time=False)
    add_trust_flag(p)
    add_num_threads_flag(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Load every pickle and write the report."""
    args = parse_args(argv)
    apply_num_threads(args.num_threads)
    if len(args.pickles) != len(args.run_names):
        raise InputError("--run_names", f"{len(args.run_names)} names for {len(args.pickles)} pickles")
    out_dir = args.out_dir + (time.strftime("_%Y-%m-%d--%H_%M_%S") if args.add_time else "")
    runs = [load_report_pickle(path, name, args.trust_checkpoint) for path, name in zip(args.pickles, args.run_names)]
    index = write_report(runs, out_dir)
    print(f"report written to {index}")
    return 0


if __name__ == "__main__":
    run_cli(main)
