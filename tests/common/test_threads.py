"""common.threads: the default thread count follows affinity, ranks per node and OMP_NUM_THREADS."""
from __future__ import annotations

import argparse

import pytest
import torch

from common import threads


@pytest.mark.parametrize("cores, env, expected", [
    (16, {}, 16),
    (16, {"LOCAL_WORLD_SIZE": "4"}, 4),
    (16, {"SLURM_NTASKS_PER_NODE": "8(x2)"}, 2),
    (2, {"LOCAL_WORLD_SIZE": "4"}, 1),
    (16, {"OMP_NUM_THREADS": "3"}, 3),
    (16, {"LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "12"}, 8),
])
def test_default_num_threads(monkeypatch, cores, env, expected):
    monkeypatch.setattr(threads, "available_cores", lambda: cores)
    assert threads.default_num_threads(env) == expected


def test_flag_and_apply():
    before = torch.get_num_threads()
    try:
        args = threads.add_num_threads_flag(argparse.ArgumentParser()).parse_args(["--num_threads", "1"])
        assert threads.apply_num_threads(args.num_threads) == 1 and torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="num_threads"):
            threads.apply_num_threads(0)
    finally:
        torch.set_num_threads(before)
