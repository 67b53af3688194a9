"""Evaluate a checkpoint on set abstraction, set completion and odd-one-out (`python test.py ...`).

README command: python test.py --experiment AbstractionEmbedding --dataset $DATASET \
    --model AbstractionEmbeddingModule --resume metadata/AbstractionEmbedding_${DATASET}_SAM_1-2-3-4_best.pth.tar
"""
from __future__ import annotations

from collections.abc import Sequence

from common.distributed import cleanup, init_distributed
from common.errors import run_cli
from common.threads import apply_num_threads
from set_abstraction import cfg
from set_abstraction.experiment import AbstractionEmbedding


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags and run the three evaluation tasks (test.py always evaluates)."""
    args = cfg.parse_args(argv, prog="test.py", description=__doc__, mode="test")
    args.evaluate = True
    apply_num_threads(args.num_threads)
    info = init_distributed(device=args.device)
    try:
        AbstractionEmbedding(args, info, mode="test").evaluate()
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    run_cli(main)
