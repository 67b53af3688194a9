"""Evaluate a trained model: `python eval.py --model M --infos_path I --language_eval 1 ...` (flags: spec 2.8)."""
from __future__ import annotations

from typing import Sequence

from common.errors import run_cli
from common.threads import apply_num_threads
from spatial_captioning.evaluation import run_eval
from spatial_captioning.opts import parse_eval_opt


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options and evaluate."""
    opt, given = parse_eval_opt(argv)
    apply_num_threads(opt.num_threads)
    if opt.image_folder:
        from spatial_captioning.image_folder import caption_image_folder

        caption_image_folder(opt, given)
        return 0
    run_eval(opt, given)
    return 0


if __name__ == "__main__":
    run_cli(main)
