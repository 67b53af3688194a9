"""Train the Set Abstraction Module on cached features (original entry point: `python train.py ...`).

README command: python train.py --exp_id RUN1 --experiment AbstractionEmbedding --dataset $DATASET \
    --model AbstractionEmbeddingModule
"""
from __future__ import annotations

from collections.abc import Sequence

from common.distributed import cleanup, init_distributed
from common.errors import run_cli
from common.threads import apply_num_threads
from set_abstraction import cfg
from set_abstraction.experiment import AbstractionEmbedding


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, then train (or, with --evaluate, run the three test tasks)."""
    args = cfg.parse_args(argv, prog="train.py", description=__doc__)
    apply_num_threads(args.num_threads)
    info = init_distributed(device=args.device)
    try:
        experiment = AbstractionEmbedding(args, info, mode="train")
        if args.evaluate:  # spec 9.8 (F): a real evaluation instead of calling a bool
            experiment.evaluate()
        else:
            experiment.run()
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    run_cli(main)
