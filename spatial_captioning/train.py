"""Train a caption model: `python train.py --id ... --caption_model spatial_pe ...` (flags: spec 2.7, `--help`)."""
from __future__ import annotations

from typing import Sequence

from common.errors import run_cli
from common.threads import apply_num_threads
from spatial_captioning.opts import parse_train_opt
from spatial_captioning.training import train


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options and train."""
    opt = parse_train_opt(argv)
    apply_num_threads(opt.num_threads)
    train(opt)
    return 0


if __name__ == "__main__":
    run_cli(main)
