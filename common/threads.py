"""One CPU thread policy for every script: ``--num_threads``, defaulting to the cores this process really has.

torch sizes its intra-op pool from the machine's core count and its workers spin while waiting for
work. On a shared or busy machine, and under ``torchrun`` with several ranks per node, that
oversubscribes the cores and a training step can run 10x slower than with one thread. The default
here is the number of cores the process may run on (its CPU affinity, which slurm/cgroups/taskset
narrow) divided by the ranks sharing this node, and never more than ``OMP_NUM_THREADS`` when that
is set.
"""
from __future__ import annotations

import argparse
import os

import torch


def available_cores() -> int:
    """Cores this process may run on (CPU affinity where the OS reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS / Windows
        return max(1, os.cpu_count() or 1)


def default_num_threads(env: dict[str, str] | None = None) -> int:
    """available cores // ranks on this node, capped by OMP_NUM_THREADS when set."""
    env = dict(os.environ if env is None else env)
    ranks = int(env.get("LOCAL_WORLD_SIZE") or env.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0] or 1)
    threads = max(1, available_cores() // max(1, ranks))
    if env.get("OMP_NUM_THREADS", "").isdigit() and int(env["OMP_NUM_THREADS"]) > 0:
        threads = min(threads, int(env["OMP_NUM_THREADS"]))
    return threads


def add_num_threads_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--num_threads`` (CPU threads for torch; default: see ``default_num_threads``)."""
    parser.add_argument("--num_threads", type=int, default=None,
                        help="CPU threads torch may use in this process (default: the cores this process "
                             "may run on, divided by the ranks on this node, at most OMP_NUM_THREADS)")
    return parser


def apply_num_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op thread count (``None``: the default policy); returns the count used."""
    threads = default_num_threads() if num_threads is None else int(num_threads)
    if threads < 1:
        raise ValueError(f"--num_threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return threads
