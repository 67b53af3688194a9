"""Runtime shared by the task entry points: device/AMP/distributed setup, logging, the training loop,
the meta-loader, checkpoints in the original format (spec 2.6, 5.3-5.5, 6.1) and optional wandb."""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import logging.handlers
import os
import random
import sys
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from common.checkpoint import atomic_torch_save, atomic_write_text, capture_rng_state, restore_rng_state
from common.distributed import (DistInfo, all_reduce_mean, barrier, init_distributed, is_main_process,
                                make_sampler, seed_everything, wrap_model)
from common.errors import InputError
from common.experiment_log import ExperimentLog, parse_report_to
from common.threads import apply_num_threads
from singularity.config import to_container
from singularity.data.annotations import UnreadableBatch
from singularity.models.config_paths import cfg_get
from singularity.optim import create_optimizer, create_scheduler

logger = logging.getLogger("singularity")


@dataclass
class Runtime:
    """Where and how a task runs."""

    info: DistInfo
    device: torch.device
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    wandb: object | None = None
    log: ExperimentLog | None = None

    def autocast(self):
        """Autocast context for the configured precision (a no-op when AMP is off)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


def setup_runtime(config: DictConfig) -> Runtime:
    """Distributed init (torchrun/slurm or single process), device, seeds (seed + rank), AMP (pitfall 9.4 F)."""
    apply_num_threads(cfg_get(config, "num_threads"))  # the project's thread policy (--num_threads), first
    want = str(cfg_get(config, "device", "cuda"))
    if want.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("device=%s requested but CUDA is not available: running on CPU", want)
        want = "cpu"
    dist_url = str(cfg_get(config, "dist_url", "env://"))
    if dist_url.startswith("tcp://"):  # slurm launch: rendezvous at the first node (spec 2.2)
        host, _, port = dist_url[len("tcp://"):].rpartition(":")
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = host, port
    elif dist_url != "env://":
        raise InputError("dist_url", f"dist_url must be env:// or tcp://host:port, got {dist_url!r}")
    start_logging()
    info = init_distributed(device="cuda" if want.startswith("cuda") else "cpu")
    config.distributed = info.distributed
    OmegaConf.update(config, "rank", info.rank, force_add=True)
    OmegaConf.update(config, "world_size", info.world_size, force_add=True)
    seed_everything(int(cfg_get(config, "seed", 42)))
    # denormal floats (tiny Adam states / attention probabilities) slow CPU kernels by orders of magnitude
    torch.set_flush_denormal(True)
    amp_dtype, scaler = None, None
    if cfg_get(config, "bf16", False):
        amp_dtype = torch.bfloat16
    elif cfg_get(config, "fp16", False):
        if info.device.type == "cuda":
            amp_dtype = torch.float16
            scaler = torch.amp.GradScaler("cuda")
        else:
            logger.warning("fp16=True needs CUDA; running in float32 on CPU (use bf16=True for CPU autocast)")
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return Runtime(info=info, device=info.device, amp_dtype=amp_dtype, scaler=scaler)


def check_output_dir(config: DictConfig) -> Path | None:
    """Refuse an ``output_dir`` that already holds results (allowed: ``code`` and ``slurm*`` files, spec 2.3).

    Called before any work; nothing is created here, so a launch that fails on bad input leaves no
    half-made directory behind (issue 11).
    """
    out = cfg_get(config, "output_dir")
    if out is None:
        return None
    out = Path(str(out))
    if out.exists() and not out.is_dir():
        raise InputError(out, "output_dir exists and is not a directory", field="output_dir")
    if out.exists() and is_main_process():
        extra = [p.name for p in out.iterdir() if p.name != "code" and "slurm" not in p.name]
        if extra:
            raise InputError(out, f"output_dir already holds results ({', '.join(sorted(extra)[:5])}); "
                                  "refusing to overwrite: choose a new output_dir", field="output_dir")
    return out


def setup_output_dir(config: DictConfig, runtime: Runtime | None = None) -> Path | None:
    """Create ``output_dir`` (rank 0) once the inputs are checked; save config.yaml; file logging.

    With ``runtime``, opens its experiment log: ``metrics.jsonl`` in the common schema of the project (plus
    TensorBoard / wandb scalars with ``report_to``), rank 0 only.
    """
    out = check_output_dir(config)
    if out is None:
        return None
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(config))
    barrier()
    setup_logging(out)
    if runtime is not None:
        runtime.log = ExperimentLog(out, report_to=parse_report_to(cfg_get(config, "report_to")),
                                    config=to_container(config), enabled=is_main_process(),
                                    run_name=out.name)
    return out


_EARLY_RECORDS: logging.handlers.MemoryHandler | None = None


def start_logging() -> None:
    """Console logging from the start of a run; records are kept for ``train.log`` until it exists."""
    global _EARLY_RECORDS
    setup_logging(None)
    _EARLY_RECORDS = logging.handlers.MemoryHandler(capacity=100000, flushLevel=logging.CRITICAL + 1)
    logger.addHandler(_EARLY_RECORDS)


def setup_logging(output_dir: Path | None) -> None:
    """File log ``train.log`` (rank r>0: ``train.log.rank<r>``) + console on rank 0 (spec 2.6 format)."""
    fmt = logging.Formatter("%(asctime)s | %(levelname)s | %(name)s : %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter("%(asctime)s | %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"))
        logger.addHandler(console)
    if output_dir is not None:
        name = "train.log" if rank == 0 else f"train.log.rank{rank}"
        handler = logging.FileHandler(output_dir / name)
        handler.setFormatter(fmt)
        logger.addHandler(handler)
        global _EARLY_RECORDS
        if _EARLY_RECORDS is not None:  # what was logged before the directory existed
            _EARLY_RECORDS.setTarget(handler)
            _EARLY_RECORDS.flush()
            _EARLY_RECORDS.close()
            _EARLY_RECORDS = None


def setup_wandb(config: DictConfig, runtime: Runtime, model) -> None:
    """wandb run on rank 0 only when ``wandb.enable`` (imported only then, pitfall 9.14 F)."""
    if not cfg_get(config, "wandb.enable", False) or not is_main_process():
        return
    try:
        import wandb
    except ImportError as err:
        raise InputError("wandb.enable", "wandb.enable=True but the wandb package is not installed "
                                         "(pip install wandb, or pass wandb.enable=False)") from err
    out = cfg_get(config, "output_dir", "run")
    runtime.wandb = wandb.init(project=cfg_get(config, "wandb.project"), entity=cfg_get(config, "wandb.entity"),
                               name=os.path.basename(str(out)), config=to_container(config), reinit=True)
    wandb.watch(model)


def log_wandb(runtime: Runtime, values: dict, step: int, prefix: str = "") -> None:
    """Log a dict to wandb when enabled."""
    if runtime.wandb is not None:
        runtime.wandb.log({f"{prefix}{k}": v for k, v in values.items()}, step=step)


def close_log(runtime: Runtime) -> None:
    """Flush and close the experiment log's backends (metrics.jsonl is written line by line)."""
    if runtime.log is not None:
        runtime.log.close()


def log_results(runtime: Runtime, values: dict, step: int, prefix: str = "", epoch: int | None = None,
                split: str = "val") -> None:
    """Evaluation numbers to wandb (``wandb.enable``, the original's tags) and to ``metrics.jsonl``.

    ``prefix`` is the test set (``msrvtt_1k_test/``); non-numeric entries are left out of metrics.jsonl.
    """
    log_wandb(runtime, values, step, prefix)
    if runtime.log is not None:
        runtime.log.log({f"{prefix}{k}": v for k, v in values.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)},
                        step=step, epoch=epoch, split=split)


class SmoothedValue:
    """Windowed median + global average of a scalar."""

    def __init__(self, window: int = 20, fmt: str = "{median:.4f} ({global_avg:.4f})"):
        self.values = deque(maxlen=window)
        self.total, self.count, self.fmt = 0.0, 0, fmt

    def update(self, value: float, n: int = 1) -> None:
        self.values.append(value)
        self.count += n
        self.total += value * n

    @property
    def median(self) -> float:
        return float(torch.tensor(list(self.values)).median()) if self.values else 0.0

    @property
    def global_avg(self) -> float:
        return self.total / max(1, self.count)

    @property
    def value(self) -> float:
        return self.values[-1] if self.values else 0.0

    def __str__(self) -> str:
        return self.fmt.format(median=self.median, global_avg=self.global_avg, value=self.value)


class MetricLogger:
    """The original's MetricLogger line format, plus a JSON-lines metrics log."""

    def __init__(self, delimiter: str = "  ", jsonl: Path | None = None):
        self.meters: dict[str, SmoothedValue] = defaultdict(SmoothedValue)
        self.delimiter, self.jsonl = delimiter, jsonl

    def add_meter(self, name: str, meter: SmoothedValue) -> None:
        self.meters[name] = meter

    def update(self, **values) -> None:
        for key, value in values.items():
            self.meters[key].update(float(value.item() if torch.is_tensor(value) else value))

    def synchronize(self) -> None:
        """All-reduce the global averages across ranks (CPU or CUDA, pitfall 9.4 F)."""
        for meter in self.meters.values():
            meter.total = float(all_reduce_mean(meter.total))

    def line(self) -> str:
        return self.delimiter.join(f"{name}: {meter}" for name, meter in self.meters.items())

    def averages(self) -> dict[str, float]:
        return {k: round(m.global_avg, 6) for k, m in self.meters.items()}

    def write(self, record: dict) -> None:
        if self.jsonl is not None and is_main_process():
            with open(self.jsonl, "a") as f:
                f.write(json.dumps(record) + "\n")


def build_loader(dataset, batch_size: int, num_workers: int, train: bool, collate_fn=None, seed: int = 0,
                 distributed_eval: bool = False) -> DataLoader:
    """Train: shuffled per-epoch sampler, drop_last; eval: ordered (sharded only when ``distributed_eval``)."""
    sampler = None
    if train:
        sampler = make_sampler(dataset, shuffle=True, seed=seed, drop_last=True)
    elif distributed_eval:
        sampler = make_sampler(dataset, shuffle=False)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available(), drop_last=train, collate_fn=collate_fn,
                      persistent_workers=num_workers > 0)


class MetaLoader:
    """Interleave whole batches of several loaders (one media type per step, spec 3.8).

    The per-epoch order is shuffled with ``random.Random(seed + epoch)`` on every rank: identical across
    ranks without the original's CUDA broadcast (pitfall 9.4 F) and reproducible on resume.
    """

    def __init__(self, loaders: dict[str, DataLoader], seed: int = 0):
        self.loaders, self.seed, self.epoch = loaders, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for loader in self.loaders.values():
            if hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return sum(len(loader) for loader in self.loaders.values())

    def __iter__(self):
        order = [name for name, loader in self.loaders.items() for _ in range(len(loader))]
        random.Random(self.seed + self.epoch).shuffle(order)
        iters = {name: iter(loader) for name, loader in self.loaders.items()}
        for name in order:
            yield name, next(iters[name])


def max_text_len(config, media_type: str) -> int:
    """``max_txt_l`` as int, or its per-media entry (pitfall 9.23 K)."""
    value = cfg_get(config, "max_txt_l", 32)
    return int(value) if isinstance(value, int) else int(value[media_type])


def train_one_epoch(model, meta_loader: MetaLoader, optimizer, scheduler, runtime: Runtime, config, epoch: int,
                    global_step: int, step_fn, output_dir: Path | None) -> tuple[int, dict]:
    """One epoch: forward (``step_fn`` -> loss dict) under autocast, backward, clip, step (spec 5.3)."""
    from common.distributed import progress

    model.train()
    meta_loader.set_epoch(epoch)
    jsonl = output_dir / "train_stats.jsonl" if output_dir is not None else None
    metrics = MetricLogger(jsonl=jsonl)
    metrics.add_meter("lr", SmoothedValue(window=1, fmt="{value:.6f}"))
    raw_model = model.module if hasattr(model, "module") else model
    if hasattr(raw_model, "temp"):
        metrics.add_meter("temperature", SmoothedValue(window=1, fmt="{value:.4f}"))
    log_freq = int(cfg_get(config, "log_freq", 100))
    max_norm = float(cfg_get(config, "optimizer.max_grad_norm", -1))
    n_iter = len(meta_loader)
    header = f"Train Epoch: [{epoch}]"
    start = time.time()
    bar = progress(total=n_iter, desc=header, leave=False)
    try:
        for i, (media_type, batch) in enumerate(meta_loader):
            if isinstance(batch, UnreadableBatch):
                raise batch[0].as_error()
            with runtime.autocast():
                losses = step_fn(model, media_type, batch)
            loss = sum(losses.values())
            optimizer.zero_grad()
            if runtime.scaler is not None:
                runtime.scaler.scale(loss).backward()
                if max_norm > 0:
                    runtime.scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                runtime.scaler.step(optimizer)
                runtime.scaler.update()
            else:
                loss.backward()
                if max_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                optimizer.step()
            scheduler.step()
            global_step += 1
            raw = model.module if hasattr(model, "module") else model
            values = {f"{media_type}-{k}": float(v.detach()) for k, v in losses.items()}
            metrics.update(lr=optimizer.param_groups[0]["lr"], **values)
            if hasattr(raw, "temp"):
                metrics.update(temperature=float(raw.temp.detach()))
            bar.update(1)
            if i % log_freq == 0 or i == n_iter - 1:
                eta = datetime.timedelta(seconds=int((time.time() - start) / (i + 1) * (n_iter - i - 1)))
                logger.info("%s  [%*d/%d]  eta: %s  %s  time: %.4f", header, len(str(n_iter)), i, n_iter, eta,
                            metrics.line(), (time.time() - start) / (i + 1))
                metrics.write({"epoch": epoch, "step": global_step, **{k: m.value for k, m in metrics.meters.items()}})
                if runtime.log is not None:
                    runtime.log.log({k: m.value for k, m in metrics.meters.items()}, step=global_step, epoch=epoch)
                log_wandb(runtime, {k: m.global_avg for k, m in metrics.meters.items()}, global_step, "train/")
            if cfg_get(config, "debug", False) and i >= 4:
                break
    finally:
        bar.close()  # cleared before an error line is printed
    metrics.synchronize()
    total = time.time() - start
    logger.info("%s Total time: %s (%.4f s / it)", header, datetime.timedelta(seconds=int(total)), total / max(1, n_iter))
    averages = metrics.averages()
    logger.info("Averaged stats: %s", "  ".join(f"{k}: {v:.4f}" for k, v in averages.items()))
    metrics.write({"epoch": epoch, "step": global_step, "epoch_avg": averages})
    barrier()  # only when distributed (pitfall 9.5 F)
    return global_step, averages


def save_checkpoint(path: Path, model, optimizer, scheduler, runtime: Runtime, config, epoch: int, global_step: int) -> None:
    """``{model, optimizer, scheduler, scaler, config (plain dict), epoch, global_step, rng}`` atomically (rank 0)."""
    if not is_main_process():
        return
    raw = model.module if hasattr(model, "module") else model
    atomic_torch_save({
        "model": raw.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": runtime.scaler.state_dict() if runtime.scaler is not None else {},
        "config": to_container(config),
        "epoch": epoch,
        "global_step": global_step,
        "rng": capture_rng_state(),
    }, path)


def prepare_training(model: torch.nn.Module, config, steps_per_epoch: int, checkpoint: dict,
                     runtime: Runtime) -> tuple[torch.optim.Optimizer, object, int, int]:
    """Optimizer and scheduler of a task, resumed when ``resume=True``; returns them with (start_epoch, global_step)."""
    optimizer = create_optimizer(model, config)
    scheduler = create_scheduler(optimizer, config, steps_per_epoch)
    start_epoch, global_step = 0, 0
    if cfg_get(config, "resume", False):
        start_epoch, global_step = resume_state(checkpoint, optimizer, scheduler, runtime)
    return optimizer, scheduler, start_epoch, global_step


def resume_state(checkpoint: dict, optimizer, scheduler, runtime: Runtime) -> tuple[int, int]:
    """Restore optimizer/scheduler/scaler/RNG from a checkpoint; returns (start_epoch, global_step)."""
    for key in ("optimizer", "scheduler", "epoch", "global_step"):
        if key not in checkpoint:
            raise InputError("pretrained_path", f"resume=True but the checkpoint has no '{key}' entry")
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    if runtime.scaler is not None and checkpoint.get("scaler"):
        runtime.scaler.load_state_dict(checkpoint["scaler"])
    if "rng" in checkpoint:
        restore_rng_state(checkpoint["rng"])
    return int(checkpoint["epoch"]) + 1, int(checkpoint["global_step"])


def write_json(path: Path, obj, indent: int | None = None) -> None:
    """Rank-0 atomic JSON write."""
    if is_main_process():
        atomic_write_text(path, json.dumps(obj, indent=indent))


def prepare_model(task: str, config, runtime: Runtime, tokenizer):
    """Model for ``task`` on the device (checkpoint converted + strictly loaded), DDP-wrapped when distributed."""
    from singularity.tasks_common import setup_model

    model, checkpoint = setup_model(task, config, runtime.device)
    if hasattr(model, "set_special_tokens"):
        model.set_special_tokens(tokenizer)
    if cfg_get(config, "compile", False):
        compile_model(model, str(cfg_get(config, "compile_backend", "inductor")))
    # DDP looks for unused parameters only where the configuration leaves some out of every step
    unused = model.unused_parameter_names() if hasattr(model, "unused_parameter_names") else []
    if unused and runtime.info is not None and runtime.info.distributed:
        logger.info("DDP find_unused_parameters=True: %s get no gradient in this configuration", ", ".join(unused))
    wrapped = wrap_model(model, runtime.info, find_unused_parameters=bool(unused))
    return model, wrapped, checkpoint


def compile_model(model: torch.nn.Module, backend: str = "inductor") -> torch.nn.Module:
    """``torch.compile`` the heavy sub-modules in place (state-dict keys unchanged): BEiT, BERT, QA decoder."""
    modules = [getattr(model, name, None) for name in ("vision_encoder", "text_encoder", "temporal_vision_encoder",
                                                        "text_decoder")]
    if getattr(model, "pretrain", False):  # pre-training calls text_encoder.bert directly (text / MLM passes)
        modules.append(model.text_encoder.bert)
    for module in modules:
        if module is not None:
            module.compile(backend=backend)
    logger.info("torch.compile (backend %s) of the vision/text encoders and decoder", backend)
    return model
