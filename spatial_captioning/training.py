"""The training loop of train.py (spec 5.1-5.4): XE with Noam/step decay, then SCST; ORT/README file layout."""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from common.checkpoint import atomic_torch_save, capture_rng_state, restore_rng_state
from common.distributed import init_distributed
from common.errors import InputError
from common.experiment_log import ExperimentLog
from spatial_captioning import losses, models, rewards
from spatial_captioning.checkpoints import (find_infos, find_model_file, infos_name, load_infos, load_model_weights,
                                            load_optimizer_state, save_pickle)
from spatial_captioning.data import DataLoader, model_inputs, unk_index
from spatial_captioning.evaluation import eval_split, load_references
from spatial_captioning.opts import ARCH_KEYS, check_model_opt
from spatial_captioning.optim import (NoamOpt, ReduceLROnPlateau, build_optimizer, clip_gradient, set_lr,
                                      step_decay_lr)
from spatial_captioning.speed import apply_speed_options, autocast, grad_scaler

# Architecture options a resumed run takes from its infos (vocab_size/seq_length come from the data).
RESUME_FROM_INFOS = tuple(k for k in ARCH_KEYS if k not in ("vocab_size", "seq_length"))


def seed_all(seed: int | None) -> None:
    """Seed python, numpy and torch when a seed is given (the original never seeded, spec 9.24)."""
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def pick_device(name: str) -> str:
    """cuda falls back to cpu when unavailable (spec 2.7)."""
    if name == "cuda" and not torch.cuda.is_available():
        print("cuda is not available: running on cpu")
        return "cpu"
    return name


class Trainer:
    """State of one run: model, optimiser, loaders, histories, counters."""

    def __init__(self, opt: argparse.Namespace):
        self.opt = opt
        self.dist = init_distributed(device=pick_device(opt.device))
        self.device = self.dist.device
        self.rank, self.world = self.dist.rank, self.dist.world_size
        self.main = self.rank == 0
        seed_all(opt.seed)
        self.infos: dict[str, Any] = {}
        self.histories: dict[str, Any] = {}
        ckpt = Path(opt.checkpoint_path)
        if not opt.start_from and any((ckpt / n).exists() for n in ("model.pth", "model.pt", infos_name(opt.id))):
            raise InputError(ckpt, "already holds a run; resume it with --start_from or choose a new "
                                   "--checkpoint_path (results are never overwritten silently)")
        if opt.start_from:
            self._load_infos()
        self.loader = DataLoader(opt, "train", self.infos.get("loader_state"), rank=self.rank, world_size=self.world)
        opt.vocab_size = self.loader.vocab_size()
        opt.seq_length = self.loader.seq_length()
        opt.unk_index = unk_index(self.loader.get_vocab())
        self.iteration = int(self.infos.get("iter", 0))
        self.epoch = int(self.infos.get("epoch", 0))
        self.best_val_score = self.infos.get("best_val_score") if opt.load_best_score else None
        self.loss_history = self.histories.get("loss_history", {})
        self.lr_history = self.histories.get("lr_history", {})
        self.ss_prob_history = self.histories.get("ss_prob_history", {})
        self.val_result_history = self.histories.get("val_result_history", {})
        self.model = models.setup(opt).to(self.device)
        if opt.start_from:
            path = find_model_file(opt.start_from)
            load_model_weights(self.model, path, trust=opt.trust_checkpoint)
        self.amp = getattr(opt, "amp", "none")
        self.scaler = grad_scaler(self.device, self.amp)
        apply_speed_options(self.model, opt)
        self.crit = losses.xe_criterion(opt.caption_model, opt.vocab_size, opt.label_smoothing)
        self.rl_crit = losses.RewardCriterion()
        self.optimizer = self._build_optimizer()
        if opt.start_from:
            opt_path = find_model_file(opt.start_from, ("optimizer.pth", "optimizer.pt"), required=False)
            if opt_path is not None:
                state = load_optimizer_state(opt_path, trust=opt.trust_checkpoint)
                try:
                    self.optimizer.load_state_dict(state)
                except (ValueError, KeyError, TypeError) as err:
                    raise InputError(opt_path, f"does not fit this model's optimizer ({err})") from None
        if opt.language_eval:
            load_references(opt.ann_file)  # checked now, not at the first validation
        self.cider_scorer = None
        if opt.self_critical_after != -1:
            # spec 8: check the df pickle now, not when SCST starts 30 epochs later
            self.cider_scorer = rewards.load_cider_scorer(opt.cached_tokens, opt.data_dir, opt.trust_checkpoint)
        if opt.start_from and self.infos.get("rng_state") is not None:
            restore_rng_state(self.infos["rng_state"])
        self.log_path = Path(opt.checkpoint_path) / f"train_log_{opt.id}.jsonl" if opt.id else \
            Path(opt.checkpoint_path) / "train_log.jsonl"
        self.tb = None
        self.xlog = None
        if self.main:
            Path(opt.checkpoint_path).mkdir(parents=True, exist_ok=True)
            from tensorboardX import SummaryWriter  # the original's optional tensorboardX, now a requirement

            self.tb = SummaryWriter(opt.checkpoint_path)  # events.out.tfevents.* next to the checkpoints (spec 2.7)
            # the common metrics.jsonl (and --report_to backends) beside the original's own logs
            config = {k: v for k, v in vars(opt).items() if not k.startswith("_") and isinstance(v, (int, float, str))}
            self.xlog = ExperimentLog(opt.checkpoint_path, report_to=getattr(opt, "report_to", ()), config=config,
                                      run_name=opt.id or None)

    # --- setup helpers --------------------------------------------------------------------------------------
    def _load_infos(self) -> None:
        opt = self.opt
        path = find_infos(opt.start_from, opt.id)
        self.infos = load_infos(path, trust=opt.trust_checkpoint)
        saved = self.infos.get("opt", {})
        given = getattr(opt, "_given", set())
        # issue 17: the model is rebuilt from what its infos say (ORT's rnn_size etc. already translated);
        # an architecture option given on the command line must agree with them
        for name in RESUME_FROM_INFOS:
            if name not in saved:
                continue
            if name in given and saved[name] != getattr(opt, name):
                raise InputError(path, f"command line and saved model disagree on '{name}' "
                                       f"({getattr(opt, name)!r} vs {saved[name]!r})", field=name)
            setattr(opt, name, saved[name])
        check_model_opt(opt)
        hist_path = Path(opt.start_from) / f"histories_{opt.id}.pkl"
        if not hist_path.is_file():
            hist_path = Path(opt.start_from) / "histories.pkl"
        if hist_path.is_file():
            self.histories = load_infos(hist_path, trust=opt.trust_checkpoint)

    def _build_optimizer(self):
        opt = self.opt
        params = [p for p in self.model.parameters() if p.requires_grad]
        fused = torch.device(self.device).type == "cuda"  # fused Adam kernels on CUDA (issue 15)
        if opt.noamopt:
            noam = NoamOpt(self.model.d_model if hasattr(self.model, "d_model") else opt.input_encoding_size,
                           opt.noamopt_factor, opt.noamopt_warmup,
                           torch.optim.Adam(params, lr=0, betas=(0.9, 0.98), eps=1e-9, fused=fused or None))
            noam._step = self.iteration  # restored from the iteration (spec 9.8)
            return noam
        if opt.reduce_on_plateau:
            return ReduceLROnPlateau(build_optimizer(params, opt, fused=fused))
        return build_optimizer(params, opt, fused=fused)

    def current_lr(self) -> float:
        """LR of the first parameter group."""
        return float(self.optimizer.param_groups[0]["lr"])

    # --- saving ---------------------------------------------------------------------------------------------
    def build_infos(self) -> dict:
        """Fresh infos (the original saved a stale copy as the best infos, spec 9.6)."""
        opt_dict = {k: v for k, v in vars(self.opt).items() if not k.startswith("_")}
        opt_dict["current_lr"] = self.current_lr()
        opt_dict["ss_prob"] = getattr(self.model, "ss_prob", 0.0)
        loader_state, epoch = self.loader.state_dict(), self.epoch
        if loader_state["epoch_order"] is not None and loader_state["position"] >= len(loader_state["epoch_order"]):
            # saved right after an epoch's last batch: resume at the start of the next epoch
            loader_state, epoch = {**loader_state, "epoch_order": None, "position": 0}, epoch + 1
        return {"iter": self.iteration, "epoch": epoch, "best_val_score": self.best_val_score,
                "opt": opt_dict, "vocab": self.loader.get_vocab(), "loader_state": loader_state,
                "rng_state": capture_rng_state()}

    def save(self, best: bool = False) -> None:
        """Write model.pth, optimizer.pth, infos_<id>.pkl, histories_<id>.pkl (or the -best pair)."""
        if not self.main:
            return
        ckpt = Path(self.opt.checkpoint_path)
        infos = self.build_infos()
        if best:
            atomic_torch_save(self.model.state_dict(), ckpt / "model-best.pth")
            save_pickle(infos, ckpt / infos_name(self.opt.id, best=True))
            print(f"Best model saved to {ckpt / 'model-best.pth'}")
            return
        atomic_torch_save(self.model.state_dict(), ckpt / "model.pth")
        atomic_torch_save(self.optimizer.state_dict(), ckpt / "optimizer.pth")
        save_pickle(infos, ckpt / infos_name(self.opt.id))
        histories = {"val_result_history": self.val_result_history, "loss_history": self.loss_history,
                     "lr_history": self.lr_history, "ss_prob_history": self.ss_prob_history}
        save_pickle(histories, ckpt / (f"histories_{self.opt.id}.pkl" if self.opt.id else "histories.pkl"))
        print(f"Model saved to {ckpt / 'model.pth'}")

    def log(self, record: dict) -> None:
        """Append one JSON line to the metrics log (rank 0)."""
        if self.main:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def log_metrics(self, values: dict[str, float], split: str) -> None:
        """The common metrics.jsonl record(s) at the current iteration (rank 0)."""
        if self.xlog is not None:
            self.xlog.log(values, step=self.iteration, epoch=self.epoch, split=split)

    def add_scalars(self, values: dict[str, float]) -> None:
        """TensorBoard scalars at the current iteration under the original's tag names (rank 0)."""
        if self.tb is not None:
            for tag, value in values.items():
                self.tb.add_scalar(tag, float(value), self.iteration)
            self.tb.flush()

    # --- steps ----------------------------------------------------------------------------------------------
    def average_gradients(self) -> None:
        """Mean of the gradients over ranks (works for XE and SCST alike)."""
        if self.world == 1:
            return
        for p in self.model.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad /= self.world

    def xe_step(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """Teacher-forced cross-entropy on the batch."""
        feats, masks, boxes = model_inputs(batch, self.device)
        labels = batch["labels"].to(self.device)
        with autocast(self.device, self.amp):
            logprobs = self.model(feats, labels, masks, boxes)
            loss = self.crit(logprobs, labels[:, 1:], batch["label_masks"][:, 1:].to(self.device))
        return loss, {}

    def scst_step(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """Sample S captions per image (dropout on), greedy baseline under no_grad, CIDEr-D reward (spec 4.7)."""
        feats, masks, boxes = model_inputs(batch, self.device)
        with autocast(self.device, self.amp):
            gen_result, sample_logprobs = self.model(feats, masks, boxes, opt={"sample_max": 0}, mode="sample")
        s = self.loader.get_seq_per_img()
        self.model.eval()
        with torch.no_grad(), autocast(self.device, self.amp):
            rows = torch.arange(0, feats.size(0), s, device=feats.device)  # one greedy per image: same baseline
            greedy, _ = self.model(feats.index_select(0, rows),
                                   None if masks is None else masks.index_select(0, rows),
                                   None if boxes is None else boxes.index_select(0, rows), mode="sample")
        self.model.train()
        greedy = greedy.repeat_interleave(s, 0)
        reward, stats = rewards.self_critical_reward(gen_result.cpu().numpy(), greedy.cpu().numpy(), batch["gts"], s,
                                                     self.cider_scorer, self.opt.cider_reward_weight,
                                                     self.opt.bleu_reward_weight)
        reward_t = torch.from_numpy(reward).to(sample_logprobs)
        loss = self.rl_crit(sample_logprobs, gen_result, reward_t)
        return loss, stats

    def validate(self) -> None:
        """Validation: loss, greedy captions, optional language metrics; save the best model."""
        opt = self.opt
        val_loader = DataLoader(opt, "val", length=opt.val_images_use)
        val_loader.set_vocab(self.loader.get_vocab())
        kwargs = dict(vars(opt), split="val", verbose=0, verbose_beam=0, verbose_loss=1, sample_max=1,
                      lang_metrics=getattr(opt, "lang_metrics", None))
        val_loss, predictions, lang_stats, _ = eval_split(self.model, self.crit, val_loader, kwargs, self.device)
        if isinstance(self.optimizer, ReduceLROnPlateau):
            self.optimizer.scheduler_step(-lang_stats["CIDEr"] if lang_stats else val_loss)
        self.val_result_history[self.iteration] = {"loss": val_loss, "lang_stats": lang_stats,
                                                   "predictions": predictions}
        score = lang_stats.get("CIDEr", 0.0) if opt.language_eval == 1 else -val_loss
        if self.main:
            print(f"validation loss: {val_loss:.4f} " + " ".join(f"{k}: {v:.4f}" for k, v in lang_stats.items()))
        self.log({"iter": self.iteration, "epoch": self.epoch, "val_loss": val_loss, **lang_stats})
        self.add_scalars({"validation loss": val_loss, **lang_stats})
        self.log_metrics({"loss": val_loss, **lang_stats}, split="val")
        if self.best_val_score is None or score > self.best_val_score:
            self.best_val_score = score
            self.save(best=True)

    def optimizer_step(self, loss: torch.Tensor) -> None:
        """backward, gradient average over ranks, element-wise clipping, step (fp16: through the grad scaler)."""
        opt = self.opt
        if self.scaler is None:
            loss.backward()
            self.average_gradients()
            clip_gradient(self.optimizer, opt.grad_clip)
            self.optimizer.step()
            return
        inner = getattr(self.optimizer, "optimizer", self.optimizer)
        self.scaler.scale(loss).backward()
        self.average_gradients()
        self.scaler.unscale_(inner)  # clip the true gradients, as the fp32 path does
        clip_gradient(self.optimizer, opt.grad_clip)
        if self.optimizer is inner:
            self.scaler.step(inner)
        else:  # Noam / plateau wrappers: their schedule advances, the inner step is skipped on inf/NaN gradients
            self.optimizer.step(step_fn=lambda: self.scaler.step(inner))
        self.scaler.update()

    # --- loop -----------------------------------------------------------------------------------------------
    def run(self) -> dict:
        """Train until max_epochs (or max_iters); return the last logged values."""
        opt = self.opt
        from common.distributed import progress

        last: dict[str, float] = {}
        stop = False
        for epoch in range(self.epoch, opt.max_epochs):
            self.epoch = epoch
            if not opt.noamopt and not opt.reduce_on_plateau:
                set_lr(self.optimizer, step_decay_lr(opt, epoch))
            # spec 9.9: the ORT condition (>= 0); the transformer ignores ss_prob, show_tell uses it
            if opt.scheduled_sampling_start >= 0 and epoch > opt.scheduled_sampling_start:
                frac = (epoch - opt.scheduled_sampling_start) // opt.scheduled_sampling_increase_every
                self.model.ss_prob = min(opt.scheduled_sampling_increase_prob * frac, opt.scheduled_sampling_max_prob)
            sc_flag = opt.self_critical_after != -1 and epoch >= opt.self_critical_after
            bar = progress(self.loader, desc=f"epoch {epoch}", leave=False, total=len(self.loader))
            for batch in bar:
                start = time.time()
                self.model.train()
                self.optimizer.zero_grad()
                loss, stats = self.scst_step(batch) if sc_flag else self.xe_step(batch)
                self.optimizer_step(loss)
                self.iteration += 1
                loss_value = float(loss.detach())
                elapsed = time.time() - start
                if self.main:
                    if sc_flag:
                        print(f"Iter {self.iteration} (epoch {epoch}), avg reward = {stats['avg_reward']:.3f}, "
                              f"time/batch = {elapsed:.3f}")
                        print(f"Cider scores: {stats.get('cider', 0.0)}")
                        if "bleu" in stats:
                            print(f"Bleu scores: {stats['bleu']}")
                    else:
                        print(f"Iter {self.iteration} (epoch {epoch}), loss = {loss_value:.3f}, "
                              f"time/batch = {elapsed:.3f}")
                last = {"loss": loss_value, **stats}
                if self.iteration % opt.losses_log_every == 0:
                    value = stats["avg_reward"] if sc_flag else loss_value
                    self.loss_history[self.iteration] = value
                    self.lr_history[self.iteration] = self.current_lr()
                    self.ss_prob_history[self.iteration] = getattr(self.model, "ss_prob", 0.0)
                    self.log({"iter": self.iteration, "epoch": epoch, "lr": self.current_lr(),
                              "scst": bool(sc_flag), **last})
                    scalars = {"train_loss": loss_value, "learning_rate": self.current_lr(),
                               "scheduled_sampling_prob": getattr(self.model, "ss_prob", 0.0)}
                    if sc_flag:
                        scalars["avg_reward"] = stats["avg_reward"]
                    self.add_scalars(scalars)
                    self.log_metrics({"loss": loss_value, "lr": self.current_lr(),
                                      **({"avg_reward": stats["avg_reward"]} if sc_flag else {})}, split="train")
                if self.iteration % opt.perform_validation_every == 0:
                    self.validate()
                if self.iteration % opt.save_checkpoint_every == 0:
                    self.save()
                if 0 < opt.max_iters <= self.iteration:
                    stop = True
                    break
            if stop:
                break
        else:
            self.epoch = opt.max_epochs
        if self.iteration % opt.save_checkpoint_every != 0:
            self.save()
        if self.tb is not None:
            self.tb.close()
        if self.xlog is not None:
            self.xlog.close()
        return last


def train(opt: argparse.Namespace) -> dict:
    """Build a Trainer from parsed options and run it."""
    return Trainer(opt).run()
