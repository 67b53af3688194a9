"""Distributed launch helpers: torchrun or slurm or one process, with the same few functions.

``init_distributed()`` reads torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT) or slurm's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODELIST), picks NCCL on
CUDA and gloo on CPU, and falls back to a single process when neither launcher is present.
"""
from __future__ import annotations

import logging
import os
import random
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm


@dataclass(frozen=True)
class LaunchEnv:
    """Rank layout read from the launcher's environment variables."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str | None
    master_port: str | None
    launcher: str  # "torchrun", "slurm" or "none"


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job and the device it should use."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def first_slurm_host(nodelist: str) -> str:
    """The first hostname of a slurm node list such as ``gpu[003-006,010],cpu01`` (-> ``gpu003``)."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        raise ValueError(f"cannot parse SLURM_NODELIST {nodelist!r}")
    prefix, ranges = match.group(1), match.group(2)
    if ranges is None:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def read_launch_env(env: Mapping[str, str] | None = None) -> LaunchEnv:
    """Rank layout from torchrun's variables, else slurm's, else a single process."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return LaunchEnv(rank=int(env["RANK"]), world_size=int(env["WORLD_SIZE"]),
                         local_rank=int(env.get("LOCAL_RANK", 0)), master_addr=env.get("MASTER_ADDR"),
                         master_port=env.get("MASTER_PORT"), launcher="torchrun")
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_NODELIST") or env.get("SLURM_JOB_NODELIST")
        addr = env.get("MASTER_ADDR") or (first_slurm_host(nodelist) if nodelist else "127.0.0.1")
        # A job-specific default port keeps two jobs sharing a node apart.
        port = env.get("MASTER_PORT") or str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000)
        return LaunchEnv(rank=int(env["SLURM_PROCID"]), world_size=int(env["SLURM_NTASKS"]),
                         local_rank=int(env.get("SLURM_LOCALID", 0)), master_addr=addr,
                         master_port=port, launcher="slurm")
    return LaunchEnv(rank=0, world_size=1, local_rank=0, master_addr=None, master_port=None, launcher="none")


def init_distributed(backend: str | None = None, device: str | None = None,
                     timeout_minutes: int = 30) -> DistInfo:
    """Join the process group the launcher set up (or run alone); returns this process's DistInfo.

    ``device`` forces "cpu" or "cuda"; by default CUDA is used when available.
    """
    launch = read_launch_env()
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch.cuda.is_available() is False")
    if use_cuda:
        torch.cuda.set_device(launch.local_rank % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    if launch.world_size == 1:
        return DistInfo(rank=0, world_size=1, local_rank=0, device=dev, backend=None)
    backend = backend or ("nccl" if use_cuda else "gloo")
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", launch.master_addr or "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", launch.master_port or "29500")
        dist.init_process_group(backend=backend, init_method="env://", rank=launch.rank,
                                world_size=launch.world_size, timeout=timedelta(minutes=timeout_minutes))
    return DistInfo(rank=launch.rank, world_size=launch.world_size, local_rank=launch.local_rank,
                    device=dev, backend=backend)


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes in the job (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(value: torch.Tensor | float) -> torch.Tensor | float:
    """Mean of ``value`` over ranks; a float in gives a float out."""
    if not is_distributed():
        return value
    if isinstance(value, torch.Tensor):
        reduced = value.detach().clone()
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        return reduced / get_world_size()
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.item() / get_world_size()


def seed_everything(seed: int, rank_aware: bool = True) -> int:
    """Seed Python, NumPy and torch (CPU and CUDA); with ``rank_aware`` rank r uses seed + r. Returns it."""
    actual = seed + get_rank() if rank_aware else seed
    random.seed(actual)
    np.random.seed(actual % (2**32))
    torch.manual_seed(actual)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(actual)
    return actual


def make_sampler(dataset: Dataset, shuffle: bool, seed: int = 0, drop_last: bool = False) -> DistributedSampler:
    """A sampler giving this rank its shard; call ``set_epoch(e)`` each epoch for a new, reproducible order.

    With one process it is the whole dataset (shuffled per epoch from ``seed`` when asked).
    """
    return DistributedSampler(dataset, num_replicas=get_world_size(), rank=get_rank(),
                              shuffle=shuffle, seed=seed, drop_last=drop_last)


def wrap_model(model: torch.nn.Module, info: DistInfo, **ddp_kwargs: Any) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when distributed, else ``model`` itself."""
    if not info.distributed:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs)


def progress(iterable: Iterable | None = None, **tqdm_kwargs: Any) -> tqdm:
    """tqdm shown on rank 0 only (and never when ``disable=True`` is passed)."""
    disable = tqdm_kwargs.pop("disable", False) or not is_main_process()
    tqdm_kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=disable, **tqdm_kwargs)


def get_logger(name: str, level: int = logging.INFO) -> logging.Logger:
    """A logger that prints ``level`` and above on rank 0 and only warnings on other ranks."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        rank = get_rank()
        prefix = f"[rank {rank}] " if get_world_size() > 1 else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s",
                                               datefmt="%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level if is_main_process() else max(level, logging.WARNING))
    return logger


def cleanup() -> None:
    """Leave the process group (no-op when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
