"""The AbstractionEmbedding experiment: data and model assembly, the training loop, validation and the
three-task evaluation that train.py and test.py share (spec 2.1, 5)."""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from common.checkpoint import (CheckpointManager, atomic_torch_save, atomic_write_text, load_state_dict_strict,
                               unwrap_model)
from common.distributed import DistInfo, get_logger, make_sampler, progress, seed_everything, wrap_model
from common.errors import InputError
from common.experiment_log import ExperimentLog
from set_abstraction import cfg
from set_abstraction.convert import convert_state_dict, read_original_checkpoint, to_original_state_dict
from set_abstraction.data import (CachedAbstractionDataset, CachedOutlierDataset, CachedRankingDataset,
                                  FeatureStore)
from set_abstraction.graph import AbstractionGraph, load_category_embeddings, load_graph
from set_abstraction.logger import AbstractionLogger, ProgressMeter
from set_abstraction.model import AbstractionEmbeddingModule, SAMConfig, canonical_subsets
from set_abstraction.schedule import ScheduleMismatch, build_schedule
from set_abstraction.tasks import abstraction_metrics, evaluate_outlier, evaluate_ranking, format_summary

LOG = get_logger("set_abstraction")
COMPILE_BACKEND = "inductor"  # torch.compile's default; tests use "aot_eager" (same graph, no C++ build)


# ----------------------------------------------------------------------------------------------
# Assembly
# ----------------------------------------------------------------------------------------------

def model_config(args: argparse.Namespace) -> SAMConfig:
    """Sizes from --model_config, else the released ones for --dataset/--basemodel_name; scales from --scales."""
    if args.model_config:
        config = SAMConfig.from_json(args.model_config)
    else:
        dim = cfg.feature_dim(args.basemodel_name)
        config = SAMConfig(in_features=dim, out_features=dim, num_nodes=cfg.NUM_NODES[args.dataset],
                           embedding_dim=cfg.EMBEDDING_DIM, bottleneck_dim=cfg.BOTTLENECK_DIM)
    config.scales = list(args.scales)
    return config


def build_model(args: argparse.Namespace, graph: AbstractionGraph | None = None,
                config: SAMConfig | None = None) -> AbstractionEmbeddingModule:
    """The model for the flags; checks that every graph label fits the classifier."""
    config = config or model_config(args)
    if graph is not None:
        top = max(graph.node_to_label(n) for n in graph.nodes)
        if top >= config.num_nodes:
            raise InputError(graph.source, f"label {top} does not fit a classifier over {config.num_nodes} nodes "
                                           "(pass a --model_config with a larger num_nodes)", field="label")
    return AbstractionEmbeddingModule.from_config(config)


def use_fused_optimizer(args: argparse.Namespace, device: torch.device) -> bool:
    """--fused_optimizer auto|on|off on ``device`` (torch has fused Adam/SGD kernels for CPU and CUDA)."""
    choice = getattr(args, "fused_optimizer", "off")
    if choice == "off":
        return False
    supported = device.type in ("cpu", "cuda")
    if choice == "on" and not supported:
        raise InputError("--fused_optimizer", f"no fused kernel on {device.type}; pass --fused_optimizer off")
    return supported


def build_optimizer(args: argparse.Namespace, params: Any, device: torch.device | str = "cpu") -> torch.optim.Optimizer:
    """Adam(wd=5e-4) or SGD(momentum=0.9, wd=5e-4); spec 9.10 (F): no shared mutable registry.

    The fused kernel (issue 15) computes the same update as the original's per-parameter loop (L2 weight
    decay added to the gradient, not AdamW's decoupled decay); ``--fused_optimizer off`` restores the loop.
    """
    fused = {"fused": True} if use_fused_optimizer(args, torch.device(device)) else {}
    if args.optimizer == "Adam":
        return torch.optim.Adam(params, lr=args.lr, weight_decay=5e-4, **fused)
    return torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=5e-4, **fused)


def autocast_context(amp: str, device: torch.device) -> Any:
    """torch.autocast for --amp bf16|fp16 on ``device`` (fp16 needs CUDA), a no-op context for none."""
    if amp == "none":
        return contextlib.nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise InputError("--amp", "fp16 autocast needs CUDA (it trains with a gradient scaler); use bf16 on CPU")
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


class MetadataBundle:
    """Graph, category embeddings and the per-split datasets of one --metadata_dir, loaded once on demand.

    Every file is checked against the model's sizes (feature width, embedding width) as it is read.
    """

    def __init__(self, args: argparse.Namespace, config: SAMConfig):
        self.paths = cfg.metadata_paths(args)
        self.dataset = args.dataset
        self.config = config
        self.trust = args.trust_checkpoint
        self.graph = load_graph(self.paths.graph())
        self.category_embeddings = load_category_embeddings(self.paths.category_embeddings(), self.graph,
                                                            config.embedding_dim, trust=self.trust)
        self._stores: dict[str, FeatureStore] = {}
        self._datasets: dict[str, Any] = {}

    def store(self, split: str) -> FeatureStore:
        """Feature index of a split (row order per spec 3.4)."""
        if split not in self._stores:
            emb = self.paths.embeddings(split)
            needs_listfile = self.dataset == "kinetics" or emb is None
            self._stores[split] = FeatureStore(self.paths.features(split), self.dataset, emb,
                                               self.paths.listfile(split) if needs_listfile else None,
                                               width=self.config.in_features,
                                               embedding_dim=self.config.embedding_dim, trust=self.trust)
        return self._stores[split]

    def abstraction(self, split: str) -> CachedAbstractionDataset:
        """Train/val abstraction sets."""
        if split not in self._datasets:
            self._datasets[split] = CachedAbstractionDataset(self.paths.sets(split), self.store(split), self.graph,
                                                             self.category_embeddings)
        return self._datasets[split]

    def ranking(self) -> CachedRankingDataset:
        """Human sets for set completion."""
        if "ranking" not in self._datasets:
            self._datasets["ranking"] = CachedRankingDataset(self.paths.sets("test"), self.store("test"))
        return self._datasets["ranking"]

    def outlier(self) -> CachedOutlierDataset:
        """Human sets for odd-one-out."""
        if "outlier" not in self._datasets:
            self._datasets["outlier"] = CachedOutlierDataset(self.paths.sets("test"), self.store("test"))
        return self._datasets["outlier"]


# ----------------------------------------------------------------------------------------------
# The experiment
# ----------------------------------------------------------------------------------------------

class NonFiniteLossError(InputError):
    """Training or validation produced a NaN/inf loss: stop before anything is saved from it."""


class AbstractionEmbedding:
    """Trains and evaluates the SAM; names, logs and checkpoints follow the original (spec 2.4, 2.5)."""

    def __init__(self, args: argparse.Namespace, info: DistInfo, mode: str = "train"):
        self.args = args
        self.info = info
        self.mode = mode
        get_logger("set_abstraction")  # re-applies the rank-0-only level now that the rank is known
        self.device = info.device
        self.name = cfg.run_name(args)
        sub = Path(args.experiment) / args.model_name
        self.log_dir = Path(args.log_dir) / sub
        self.checkpoint_dir = Path(args.checkpoint_dir) / sub
        self.output_dir = Path(args.output_dir) / sub
        self.evaluating = mode == "test" or args.evaluate
        if torch.cuda.is_available():
            torch.backends.cudnn.enabled = args.cudnn_enabled
            torch.backends.cudnn.benchmark = args.cudnn_benchmark
        seed_everything(args.seed)
        # Every input is read and checked before anything is created or written (issue 11).
        config = model_config(args)
        self.meta = MetadataBundle(args, config)
        self.graph = self.meta.graph
        if self.evaluating:
            self.meta.abstraction("val"), self.meta.ranking(), self.meta.outlier()
        else:
            self.meta.abstraction("train"), self.meta.abstraction("val")
        self.model = build_model(args, self.graph, config).to(self.device)
        self.optimizer = build_optimizer(args, self.model.parameters(), self.device)
        self.autocast = lambda: autocast_context(args.amp, self.device)  # checked here, before any work
        with self.autocast():
            pass
        self.scaler = torch.amp.GradScaler("cuda") if args.amp == "fp16" else None
        self.schedule = build_schedule(args.lr_schedule, self.optimizer,
                                       args.num_epochs if mode == "train" else 100)
        self.weights = cfg.loss_weights(args)
        self.criteria = {"embed": nn.MSELoss(), "abstr": nn.CrossEntropyLoss()}
        self.best_acc1 = 0.0
        self.start_epoch = args.start_epoch
        self.global_step = 0
        self.skip_batches = 0
        self.where = "before training"
        self.states = CheckpointManager(self.checkpoint_dir / f"{self.name}_state", keep_last=1)
        if args.resume:
            self._resume(Path(args.resume))
        elif not self.evaluating and self.checkpoint_path("checkpoint").exists():
            raise InputError(self.checkpoint_path("checkpoint"),
                             "a run of this name exists; pass --resume with it to continue, or another --exp_id")
        elif self.evaluating:
            LOG.warning("no --resume: evaluating randomly initialised weights")
        elif self.start_epoch:
            self.schedule.align(self.start_epoch, optimizer_restored=False)  # --start_epoch N: the schedule too
        if info.is_main:
            for d in (self.log_dir, self.output_dir) if self.evaluating else (
                    self.log_dir, self.checkpoint_dir, self.output_dir):
                d.mkdir(parents=True, exist_ok=True)
        # find_unused_parameters: the kept ``linear`` parameter never receives a gradient (spec 9.17).
        # Really unused (issue 15 checked it): DDP must not wait for its gradient.
        self.ddp_model = wrap_model(self.model, info, find_unused_parameters=True)
        self.train_forward, self.eval_forward = self.ddp_model, self.model
        if args.compile:
            self.train_forward = torch.compile(self.ddp_model, backend=COMPILE_BACKEND)
            self.eval_forward = torch.compile(self.model, backend=COMPILE_BACKEND)
        self.logger = AbstractionLogger(self.log_dir, self.name, append=bool(args.resume), enabled=info.is_main)
        # The common experiment log (issue 16): <log_dir>/<Exp>/<Model>/<name>/metrics.jsonl.
        self.run_dir = self.log_dir / self.name
        self.metrics_log = ExperimentLog(self.run_dir, report_to=args.report_to, enabled=info.is_main,
                                         config={k: v for k, v in vars(args).items()
                                                 if isinstance(v, (int, float, str, bool, list, type(None)))},
                                         run_name=self.name)
        if self.evaluating:
            for flag in cfg.training_only_flags_given(args):
                LOG.warning("%s has no effect when evaluating (it is a training flag)", flag)
        LOG.info("Starting experiment: %s", self.name)

    # -- naming ----------------------------------------------------------------------------------
    def checkpoint_path(self, kind: str) -> Path:
        """<checkpoint_dir>/<Exp>/<Model>/<name>_<kind>.pth.tar (kind: checkpoint, best, epoch_N)."""
        return self.checkpoint_dir / f"{self.name}_{kind}.pth.tar"

    # -- resume ----------------------------------------------------------------------------------
    def _resume(self, path: Path) -> None:
        if not path.is_file():
            raise InputError(path, "no checkpoint found")
        LOG.info("=> loading checkpoint '%s'", path)
        full_state = self.states.latest() if path.name == f"{self.name}_checkpoint.pth.tar" else None
        if full_state is not None:
            try:
                state = self.states.load(full_state, model=self.model, optimizer=self.optimizer,
                                         scheduler=self.schedule, map_location=str(self.device))
            except ScheduleMismatch as err:
                raise InputError(full_state, f"{err}; pass the run's --lr_schedule to resume it",
                                 field="scheduler") from None
            except (RuntimeError, OSError, EOFError) as err:  # truncated or corrupt files of the saved state
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise InputError(full_state, f"unreadable saved training state ({first})") from None
            self.start_epoch = state.extra["epoch"]
            self.skip_batches = state.extra["batches_done"]
            self.best_acc1 = state.extra["best_acc1"]
            self.global_step = state.step
            LOG.info("=> resumed full training state '%s' (epoch %d, batch %d)", full_state, self.start_epoch,
                     self.skip_batches)
            return
        ckpt = read_original_checkpoint(path, trust=self.args.trust_checkpoint)
        load_state_dict_strict(self.model, convert_state_dict(ckpt["state_dict"]), strict=True, source=path)
        restored = False
        if ckpt.get("optimizer") is not None and not self.evaluating:
            try:
                self.optimizer.load_state_dict(ckpt["optimizer"])
            except (ValueError, KeyError, TypeError) as err:
                raise InputError(path, f"optimizer state does not fit --optimizer {self.args.optimizer} "
                                       f"and this model ({err})", field="optimizer") from None
            restored = True
        self.start_epoch = int(ckpt["epoch"])
        self.best_acc1 = float(ckpt["best_acc1"])
        # Issue 12: an original checkpoint holds no schedule; put the schedule where the run left it.
        self.schedule.align(self.start_epoch, restored)
        LOG.info("=> loaded checkpoint '%s' (epoch %d)", path, self.start_epoch)
        LOG.info("Best Acc@1: %s", self.best_acc1)

    # -- one batch -------------------------------------------------------------------------------
    def step(self, batch: Any, meters: ProgressMeter, train: bool) -> torch.Tensor:
        """Forward, losses and accuracies of one batch; returns the weighted full loss."""
        features, (embed_t, labels) = batch
        features = features.to(self.device, non_blocking=True)
        embed_t, labels = embed_t.to(self.device), labels.to(self.device)
        model = self.train_forward if train else self.eval_forward
        with self.autocast():
            embed, logits = model(features)
        embed, logits = embed.float(), logits.float()  # losses and metrics in fp32 under --amp
        subsets = self.model.output_subsets(features.shape[1])
        # Spec 9.9 (F): the offset is the number of subsets below the smallest scale (14 for scale 4).
        offset = len(canonical_subsets(features.shape[1])) - len(subsets)
        embed_t, labels = embed_t[:, offset:], labels[:, offset:]
        losses = {
            "embed": self.criteria["embed"](embed, embed_t) * self.weights["embed"],
            "abstr": self.criteria["abstr"](logits, labels) * self.weights["abstr"],
        }
        full = losses["embed"] + losses["abstr"]
        if not torch.isfinite(full):
            split = "train" if train else "val"
            raise NonFiniteLossError(
                self.meta.paths.sets(split), f"{split} loss is {full.item()} (embed {losses['embed'].item()}, "
                f"abstr {losses['abstr'].item()}); stopped before saving anything from it "
                "(check the features' scale and --lr)", record=self.where, field="loss")
        n = features.shape[0]
        for name, value in losses.items():
            meters[name].update(value.item(), n)
        meters["full"].update(full.item(), n)
        for name, value in abstraction_metrics(logits.detach(), labels, subsets).items():
            meters[name].update(value, n)
        return full

    # -- training --------------------------------------------------------------------------------
    def train_loader(self, dataset: CachedAbstractionDataset) -> tuple[DataLoader, Any]:
        """Per-rank loader with a seeded sampler (spec 9.18 F: reproducible order per epoch)."""
        sampler = make_sampler(dataset, shuffle=True, seed=self.args.seed)
        per_rank = max(1, self.args.batch_size // self.info.world_size)
        loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, num_workers=self.args.num_workers,
                            pin_memory=self.device.type == "cuda", persistent_workers=self.args.num_workers > 0)
        return loader, sampler

    def val_loader(self, dataset: CachedAbstractionDataset) -> DataLoader:
        """Validation loader: in order, at most one worker (as the original)."""
        return DataLoader(dataset, batch_size=self.args.batch_size, shuffle=False,
                          num_workers=min(1, self.args.num_workers))

    def train_epoch(self, epoch: int, loader: DataLoader, sampler: Any) -> dict[str, float]:
        """One epoch; returns the epoch-average meters."""
        sampler.set_epoch(epoch)
        self.ddp_model.train()
        num_batches = len(loader) if self.args.max_step is None else min(len(loader), self.args.max_step)
        meters = ProgressMeter(num_batches, prefix=f"Epoch: [{epoch}]")
        end = time.time()
        # The context closes (clears) the bar on an error too, so the error line starts a line of its own.
        with progress(total=num_batches, desc=f"epoch {epoch}", leave=False) as bar:
            for i, batch in enumerate(loader):
                if i < self.skip_batches:  # resuming mid-epoch: these batches were already trained on
                    bar.update(1)
                    continue
                meters["Data"].update(time.time() - end)
                self.where = f"epoch {epoch} batch {i} (step {self.global_step + 1})"
                full = self.step(batch, meters, train=True)
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler is not None:  # --amp fp16: scaled loss, unscaled gradients before clipping
                    self.scaler.scale(full).backward()
                    self.scaler.unscale_(self.optimizer)
                else:
                    full.backward()
                norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.args.clip_gradient)
                if norm > self.args.clip_gradient:
                    LOG.info("clipping gradient: %.4f with coef %.4f", norm, self.args.clip_gradient / norm)
                if self.scaler is not None:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                self.global_step += 1
                meters["Time"].update(time.time() - end)
                end = time.time()
                bar.update(1)
                bar.set_postfix(loss=f"{meters['full'].avg:.4f}", top1=f"{meters['top1@abstr'].avg:.1f}")
                if i % self.args.log_freq == 0:
                    self.logger.write(meters.display(i))
                    self.logger.log_metrics({"mode": "train", "epoch": epoch, "batch": i, "step": self.global_step,
                                             "lr": self.optimizer.param_groups[0]["lr"],
                                             **{k: m.val for k, m in meters.meters.items()}})
                    self.metrics_log.log({"loss": meters["full"].val, "embed_loss": meters["embed"].val,
                                          "abstr_loss": meters["abstr"].val, "top1@abstr": meters["top1@abstr"].val,
                                          "lr": self.optimizer.param_groups[0]["lr"]},
                                         step=self.global_step, epoch=epoch, split="train")
                done = i + 1
                if done % self.args.checkpoint_freq == 0 and done < num_batches:
                    self.save_state(epoch=epoch, batches_done=done)
                # Spec 9.7 (F): stop after max_step batches, not at batch 0.
                if self.args.max_step is not None and done >= self.args.max_step:
                    self.logger.write("Max steps reached!")
                    break
        self.skip_batches = 0
        return meters.averages()

    @torch.no_grad()
    def validate(self, epoch: int | None, dataset: CachedAbstractionDataset, evaluate: bool = False) -> dict[str, float]:
        """Validation over the abstraction sets; writes val lines and the Testing Results block."""
        self.model.eval()
        loader = self.val_loader(dataset)
        meters = ProgressMeter(len(loader), prefix=f"Epoch: [{epoch}]")
        stream = "eval" if evaluate else "val"
        end = time.time()
        with progress(loader, desc="validate", leave=False) as bar:
            for i, batch in enumerate(bar):
                meters["Data"].update(time.time() - end)
                self.where = (f"validation after epoch {epoch} batch {i}" if epoch is not None
                              else f"evaluation batch {i}")
                self.step(batch, meters, train=False)
                meters["Time"].update(time.time() - end)
                end = time.time()
                if i % self.args.log_freq == 0:
                    line = meters.display(i)
                    self.logger.write(line, stream)
                    if not evaluate:
                        self.logger.write(line, "main")
        averages = meters.averages()
        if not evaluate:
            acc1 = averages[self.args.return_metric] if self.args.return_metric in averages else None
            if acc1 is None:
                raise InputError("--return_metric", f"no meter {self.args.return_metric!r}; have {sorted(averages)}")
            best = max(self.best_acc1, acc1)
            block = f"Testing Results: Loss: {meters.display(0)}\nBest {self.args.return_metric}: {best:.3f}\n"
            self.logger.write(block, "main")
            self.logger.write(block, "val")
            self.logger.log_metrics({"mode": "val", "epoch": epoch, **averages})
            self.metrics_log.log({"loss": averages["full"], "embed_loss": averages["embed"],
                                  "abstr_loss": averages["abstr"], "top1@abstr": averages["top1@abstr"],
                                  "top5@abstr": averages["top5@abstr"]},
                                 step=self.global_step, epoch=epoch, split="val")
        return averages

    def save_state(self, epoch: int, batches_done: int, metrics: dict[str, float] | None = None) -> None:
        """Full resumable state (weights, optimizer, schedule, RNG, position) via common.checkpoint."""
        self.states.save(model=self.model, optimizer=self.optimizer, scheduler=self.schedule,
                         step=self.global_step, epoch=epoch, metrics=metrics or {},
                         config={k: v for k, v in vars(self.args).items()},
                         extra={"epoch": epoch, "batches_done": batches_done, "best_acc1": self.best_acc1})

    def save_checkpoint(self, epoch_done: int, is_best: bool) -> None:
        """The original-layout files: _checkpoint (latest), _best, _epoch_N (spec 2.5, 9.14 F)."""
        if not self.info.is_main:
            return
        state = {"epoch": epoch_done, "state_dict": to_original_state_dict(unwrap_model(self.model).state_dict()),
                 "optimizer": self.optimizer.state_dict(), "best_acc1": self.best_acc1}
        atomic_torch_save(state, self.checkpoint_path("checkpoint"))
        if is_best:
            atomic_torch_save(state, self.checkpoint_path("best"))
        elif epoch_done % 5 == 0:
            atomic_torch_save(state, self.checkpoint_path(f"epoch_{epoch_done}"))

    def run(self) -> dict[str, Any]:
        """Train from start_epoch to num_epochs, validating every val_freq epochs; returns the history."""
        train_set = self.meta.abstraction("train")
        val_set = self.meta.abstraction("val")
        loader, sampler = self.train_loader(train_set)
        history: dict[str, Any] = {"train": [], "val": []}
        for epoch in range(self.start_epoch, self.args.num_epochs):
            train_avg = self.train_epoch(epoch, loader, sampler)
            history["train"].append({"epoch": epoch, **train_avg})
            self.logger.log_metrics({"mode": "train_epoch", "epoch": epoch, **train_avg})
            self.schedule.step_epoch()
            if (epoch + 1) % self.args.val_freq == 0 or epoch == self.args.num_epochs - 1:
                val_avg = self.validate(epoch, val_set)
                history["val"].append({"epoch": epoch, **val_avg})
                self.schedule.step_validation(val_avg["full"])
                acc1 = val_avg[self.args.return_metric]
                is_best = acc1 > self.best_acc1
                self.best_acc1 = max(acc1, self.best_acc1)
                self.save_checkpoint(epoch + 1, is_best)
                self.save_state(epoch=epoch + 1, batches_done=0, metrics=val_avg)
                LOG.info("epoch %d: train loss %.4f, val %s %.3f (best %.3f)", epoch, train_avg.get("full", 0.0),
                         self.args.return_metric, acc1, self.best_acc1)
        self.logger.close()
        self.metrics_log.close()
        return history

    # -- evaluation (test.py and train.py --evaluate) ---------------------------------------------
    def evaluate(self, visualize: bool = True) -> dict[str, Any]:
        """The three tasks of test.py; writes _eval.txt, _summary.txt, <name>_results.json and a PNG."""
        meters = self.validate(None, self.meta.abstraction("val"), evaluate=True)
        ranking_set = self.meta.ranking()
        ranking = evaluate_ranking(self.model, ranking_set, self.device,
                                   progress(range(len(ranking_set)), desc="set completion", leave=False))
        outlier_set = self.meta.outlier()
        outlier = evaluate_outlier(self.model, outlier_set, self.device,
                                   progress(range(len(outlier_set)), desc="odd-one-out", leave=False))
        summary = format_summary(meters, ranking, outlier)
        results = {"name": self.name, "abstraction": meters, "set_completion": ranking,
                   "odd_one_out": {str(k): v for k, v in outlier.items()}}
        if self.info.is_main:
            self.logger.write(summary, "summary")
            print(summary, end="")
            test_metrics = {"loss": meters["full"], "top1@abstr": meters["top1@abstr"],
                            "top5@abstr": meters["top5@abstr"], "set_completion_spearman": ranking["overall"]}
            test_metrics.update({f"odd_one_out_top1_N{k}": v["top1"] for k, v in outlier.items()})
            # A Spearman over too few human sets is NaN: reported in the results file, not logged as a scalar.
            self.metrics_log.log({k: v for k, v in test_metrics.items() if math.isfinite(v)},
                                 step=self.global_step, split="test")
            results_path = self.output_dir / f"{self.name}_results.json"
            atomic_write_text(results_path, json.dumps(results, indent=2, default=float) + "\n")
            if visualize and len(outlier_set):
                from set_abstraction.visualize import plot_outlier_record

                png = self.output_dir / f"{self.name}_example.png"
                largest = max(range(len(outlier_set)), key=lambda i: len(outlier_set.records[i].reference))
                plot_outlier_record(self.model, self.graph, outlier_set, largest, png, self.device)
                results["figure"] = str(png)
        self.logger.close()
        self.metrics_log.close()
        return results
