"""CLIP4IDC stage 2 (IDC fine-tuning: difference captioning).

    python main_task_caption.py --do_train --datatype clevr --data_path DATA --output_dir OUT ...
    torchrun --nproc_per_node=2 main_task_caption.py ...        (or python -m clip4idc.main_task_caption)
"""
from __future__ import annotations

from common.errors import run_cli
from clip4idc.params import build_parser, check_args

TASK = "caption"


def main(argv=None) -> int:
    """Parse the original flags and run the stage."""
    args = check_args(build_parser(TASK).parse_args(argv), TASK)
    import torch

    from clip4idc.train import run  # after parsing, so --help stays instant

    if not torch.cuda.is_available():
        from clip4idc.sysmem import keep_freed_memory

        keep_freed_memory()  # CPU runs: vocabulary-sized logits would otherwise page-fault on every step
    run(args, TASK)
    return 0


if __name__ == "__main__":
    run_cli(main)
