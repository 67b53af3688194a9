"""Evaluate an ensemble of trained runs (spec 2.9): `python eval_ensemble.py --ids A B --language_eval 1 ...`.

Each id is read from `log_<id>/` (ORT layout) or `<checkpoint_root>/<id>/` (README layout): `model-best.pth` and
`infos_<id>-best.pkl`. The runs must read the same inputs (all with grid vectors, or all without).
"""
from __future__ import annotations

from typing import Sequence

from common.errors import run_cli
from common.threads import apply_num_threads
from spatial_captioning.evaluation import run_ensemble_eval
from spatial_captioning.opts import ensemble_parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options and evaluate the ensemble."""
    args = ensemble_parser().parse_args(argv)
    apply_num_threads(args.num_threads)
    run_ensemble_eval(args)
    return 0


if __name__ == "__main__":
    run_cli(main)
