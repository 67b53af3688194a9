"""CLIP4IDC stage 1 (IDC adaptation: image-pair <-> text retrieval).

    python main_task_retrieval.py --do_train --datatype clevr --data_path DATA --output_dir OUT ...
    torchrun --nproc_per_node=2 main_task_retrieval.py ...        (or python -m clip4idc.main_task_retrieval)
"""
from __future__ import annotations

from common.errors import run_cli
from clip4idc.params import build_parser, check_args

TASK = "retrieval"


def main(argv=None) -> int:
    """Parse the original flags and run the stage."""
    args = check_args(build_parser(TASK).parse_args(argv), TASK)
    from clip4idc.train import run  # after parsing, so --help stays instant

    run(args, TASK)
    return 0


if __name__ == "__main__":
    run_cli(main)
