"""Fine-tuning loop of ``scripts/run_finetuning.py`` (spec 2.2, 5.1, 5.2), resumable through ``common.checkpoint``."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import get_linear_schedule_with_warmup

from common.checkpoint import CheckpointManager, atomic_write_json
from common.distributed import (all_reduce_mean, barrier, cleanup, get_logger, init_distributed, make_sampler,
                                progress, seed_everything, wrap_model)
from common.errors import InputError
from common.experiment_log import ExperimentLog
from visualcomet import data as vdata
from visualcomet.model import VisualCometLMHead, load_pretrained, save_pretrained
from visualcomet.optim import OriginalAdamW
from visualcomet.tokenization import VisualCometTokenizer

log = logging.getLogger("visualcomet.train")  # configured by get_logger() once the rank is known


def load_tokenizer(args: argparse.Namespace) -> VisualCometTokenizer:
    """Tokenizer from --tokenizer_name or --model_name_or_path (a local directory)."""
    from visualcomet.model import resolve_model_dir

    tokenizer = VisualCometTokenizer.from_pretrained(resolve_model_dir(args.tokenizer_name or args.model_name_or_path))
    if args.do_lower_case:
        tokenizer.do_lower_case = True
    return tokenizer


def build_model(args: argparse.Namespace, tokenizer: VisualCometTokenizer, layout: vdata.Layout) -> VisualCometLMHead:
    """Model from --model_name_or_path with the VisualCOMET config keys set and the vocabulary resized."""
    model, loaded = load_pretrained(args.model_name_or_path, config_name=args.config_name or None,
                                    trust=getattr(args, "trust_checkpoint", False),
                                    overrides={"max_event": layout.max_event, "max_place": layout.max_place,
                                               "max_inference": layout.max_inference,
                                               "use_person_ids": not args.no_person_ids,
                                               "use_subject_ids": not args.no_subject_ids,
                                               "use_bbox": args.use_bbox},
                                    vocab_size=len(tokenizer), allow_plain_gpt2=True,
                                    partial=args.allow_partial_checkpoint)
    if not loaded:
        log.warning("no weights in %s: the model starts from random initialisation", args.model_name_or_path)
    return model


def batches(dataset: vdata.VCGDataset, batch_size: int, sampler, start: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """Yield collated batches of the sampler's order (drop_last, like the original), skipping the first ``start``."""
    order = list(sampler)
    n = len(order) // batch_size
    for b in range(start, n):
        yield vdata.collate([dataset[i] for i in order[b * batch_size:(b + 1) * batch_size]])


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move every tensor of a batch."""
    return {k: v.to(device) for k, v in batch.items()}


def autocast(args: argparse.Namespace, device: torch.device) -> contextlib.AbstractContextManager:
    """--fp16 (CUDA) / --bf16 (CUDA or CPU) autocast (the original's apex O1 became torch AMP); else a no-op."""
    if args.fp16 or args.bf16:
        return torch.autocast(device.type, dtype=torch.float16 if args.fp16 else torch.bfloat16)
    return contextlib.nullcontext()


def check_fast_paths(args: argparse.Namespace, device: torch.device) -> None:
    """Refuse precision flags the device cannot run (before anything is written)."""
    if args.fp16 and args.bf16:
        raise InputError("--fp16", "choose one of --fp16 and --bf16")
    if args.fp16 and device.type != "cuda":
        raise InputError("--fp16", "float16 autocast with grad scaling needs a CUDA device; use --bf16 on CPU")


@torch.no_grad()
def evaluate(model: VisualCometLMHead, dataset: vdata.VCGDataset, batch_size: int, device: torch.device,
             args: argparse.Namespace) -> dict[str, float]:
    """Validation loss = mean of batch-mean losses over full batches only (pitfall 17 K; --eval_all_batches O)."""
    model.eval()
    losses, weights = [], []
    n = len(dataset)
    stop = n if args.eval_all_batches else (n // batch_size) * batch_size
    for start in progress(range(0, stop, batch_size), desc="eval", leave=False):
        batch = to_device(vdata.collate([dataset[i] for i in range(start, min(start + batch_size, stop))]), device)
        batch.pop("index")
        with autocast(args, device):
            loss = model(**batch)["loss"].float().item()
        losses.append(loss)
        weights.append(int((batch["labels"][:, 1:] != vdata.IGNORE_INDEX).sum()))
    model.train()
    if not losses:
        return {"loss": float("nan"), "perplexity": float("nan")}
    if args.eval_all_batches:
        loss = sum(l * w for l, w in zip(losses, weights)) / max(1, sum(weights))
    else:
        loss = sum(losses) / len(losses)
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}


def update_metrics(path: Path, values: dict[str, float]) -> None:
    """Re-read and update the metrics.json dict (spec 2.2)."""
    current = json.loads(path.read_text()) if path.is_file() else {}
    current.update(values)
    atomic_write_json(path, current)


def build_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """AdamW over two groups (weight decay on all but biases): transformers 2.4.1's rule unless --adamw torch."""
    no_decay = ("bias", "LayerNorm.weight")  # GPT-2's LayerNorms are ln_*: only biases are exempt (as original)
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(nd in n for nd in no_decay)],
         "weight_decay": args.weight_decay},
        {"params": [p for n, p in model.named_parameters() if any(nd in n for nd in no_decay)], "weight_decay": 0.0},
    ]
    cuda = next(model.parameters()).device.type == "cuda"
    if args.adamw == "torch":  # fused kernels on CUDA
        return torch.optim.AdamW(groups, lr=args.learning_rate, eps=args.adam_epsilon, fused=cuda or None)
    # foreach on CUDA; on CPU the per-parameter loop measured faster at GPT-2 small (benchmarks/visualcomet.py)
    foreach = getattr(args, "adamw_foreach", False) or (cuda and not args.adamw_loop)
    return OriginalAdamW(groups, lr=args.learning_rate, eps=args.adam_epsilon, foreach=foreach)


def check_output_dir(args: argparse.Namespace) -> None:
    """The output directory must be empty unless --overwrite_output_dir or --resume."""
    out = Path(args.output_dir)
    if out.is_dir() and any(out.iterdir()) and not (args.overwrite_output_dir or args.resume):
        raise InputError(out, "output directory exists and is not empty; use --overwrite_output_dir "
                              "(or --resume to continue its training)")


def train(args: argparse.Namespace, _stop_after: int | None = None) -> dict[str, Any]:
    """Fine-tune, saving checkpoint-N/ every --save_steps with validation; returns the final metrics.

    ``_stop_after`` ends the process-equivalent of a crash right after that optimizer step (tests only).
    """
    t0 = time.time()
    check_output_dir(args)
    info = init_distributed(device="cpu" if args.no_cuda else None)
    get_logger("visualcomet.train")
    device = info.device
    check_fast_paths(args, device)
    seed_everything(args.seed)
    out_dir = Path(args.output_dir)
    eval_dir = Path(args.eval_output_dir or args.output_dir)
    log_dir = Path(args.tb_dir or args.output_dir)
    log_file = log_dir / "train_log.jsonl"

    tokenizer = load_tokenizer(args)
    paths = vdata.DataPaths.resolve(args.data_dir, args.vcr_images_dir, args.vcr_features_dir,
                                    trust=args.trust_checkpoint)
    max_seq_len = args.max_seq_len if args.max_seq_len > 0 else tokenizer.max_len_single_sentence
    max_seq_len = min(max_seq_len, tokenizer.max_len_single_sentence)
    if info.is_main:  # rank 0 builds the cache first, the others then read it
        layout, splits = vdata.build_finetune_data(paths, tokenizer, max_seq_len, args.mode, not args.no_text,
                                                   args.cache_dir, args.cache_postfix, args.overwrite_cache)
    barrier()
    if not info.is_main:
        layout, splits = vdata.build_finetune_data(paths, tokenizer, max_seq_len, args.mode, not args.no_text,
                                                   args.cache_dir, args.cache_postfix, False)
    log.info("max_image, max_event, max_place, max_inference: %d %d %d %d", vdata.MAX_IMAGE, layout.max_event,
             layout.max_place, layout.max_inference)
    model = build_model(args, tokenizer, layout).to(device)
    attn = args.attn_implementation
    if attn == "auto":  # sdpa measured slower than eager for CPU training (benchmarks/visualcomet.py)
        attn = "sdpa" if device.type == "cuda" else "eager"
    model.set_attn_implementation(attn)
    make_ds = lambda s: vdata.VCGDataset(splits[s][2], splits[s][0], splits[s][1], tokenizer, paths,  # noqa: E731
                                         include_image=not args.no_image, use_all_dets=args.use_all_dets,
                                         feature_dim=model.feature_dim)
    train_ds, val_ds = make_ds("train"), make_ds("val")
    train_ds[0], val_ds[0]  # noqa: B018 -- fail on unreadable or mis-sized features before anything is written
    model.zero_fill_visual_slots = not args.keep_unused_visual_slots
    model.train()
    optimizer = build_optimizer(model, args)
    batch_size = args.per_gpu_train_batch_size
    steps_per_epoch = (len(train_ds) // info.world_size // batch_size) // args.gradient_accumulation_steps
    if steps_per_epoch == 0:
        raise InputError(paths.data_dir, f"{len(train_ds)} training records give no full batch of {batch_size}")
    if args.max_steps > 0:
        t_total = args.max_steps
        num_epochs = args.max_steps // steps_per_epoch + 1
    else:
        num_epochs = int(args.num_train_epochs)
        t_total = steps_per_epoch * num_epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, args.warmup_steps, t_total)
    if info.is_main:  # inputs are validated: only now does the run leave anything on disk
        for d in (out_dir, eval_dir, log_dir):
            d.mkdir(parents=True, exist_ok=True)
    barrier()
    scaler = torch.amp.GradScaler("cuda") if args.fp16 else None
    # Every parameter gets a gradient except the visual path of a text-only model (regularizing_predictor is
    # frozen: the original never used it), so DDP searches for unused parameters only with --no_image.
    ddp_model = wrap_model(model, info, find_unused_parameters=bool(args.no_image))
    if args.compile:
        ddp_model = torch.compile(ddp_model, backend=args.compile_backend)
    experiment = ExperimentLog(out_dir, report_to=args.report_to, config=vars(args), enabled=info.is_main)
    sampler = make_sampler(train_ds, shuffle=True, seed=args.seed, drop_last=True)
    manager = CheckpointManager(out_dir / "resume", keep_last=1)

    global_step, start_epoch, skip_batches = 0, 0, 0
    if args.resume and manager.latest() is not None:
        state = manager.load(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
        global_step, start_epoch = state.step, state.epoch
        skip_batches = int(state.extra.get("batch_in_epoch", 0))
        log.info("resumed from %s at step %d (epoch %d, batch %d)", state.path, global_step, start_epoch, skip_batches)

    log.info("***** Running training *****")
    log.info("  Num examples = %d", len(train_ds))
    log.info("  Num Epochs = %d", num_epochs)
    log.info("  Total optimization steps = %d", t_total)
    training_args = {k: v for k, v in vars(args).items()}
    if info.is_main:
        atomic_write_json(out_dir / "training_args.json", training_args)

    def save_and_eval(epoch: int) -> None:
        """Save checkpoint-N/ and record the validation loss/perplexity (rank 0)."""
        if info.is_main:
            ckpt = out_dir / f"checkpoint-{global_step}"
            log.info("Saving model checkpoint to %s", ckpt)
            save_pretrained(model, ckpt, tokenizer, training_args)
            log.info("Evaluate epoch ... %d; iter ... %d", epoch, global_step)
            res = evaluate(model, val_ds, args.per_gpu_eval_batch_size, device, args)
            update_metrics(eval_dir / "metrics.json", {f"perplexity_{epoch}_{global_step}": res["perplexity"],
                                                       f"loss_{epoch}_{global_step}": res["loss"]})
            with open(log_file, "a") as f:
                f.write(json.dumps({"step": global_step, "epoch": epoch, "eval_loss": res["loss"],
                                    "eval_perplexity": res["perplexity"]}) + "\n")
            experiment.log({"loss": res["loss"], "perplexity": res["perplexity"]}, step=global_step, epoch=epoch,
                           split="val")

    running, running_n, done = 0.0, 0, global_step >= t_total
    bar = progress(total=t_total, initial=global_step, desc="train")
    for epoch in range(start_epoch, num_epochs):
        if done:
            break
        sampler.set_epoch(epoch)
        start = skip_batches if epoch == start_epoch else 0
        for b_idx, batch in enumerate(batches(train_ds, batch_size, sampler, start), start=start):
            batch = to_device(batch, device)
            batch.pop("index")
            with autocast(args, device):
                loss = ddp_model(**batch)["loss"] / args.gradient_accumulation_steps
            (scaler.scale(loss) if scaler else loss).backward()
            running += loss.item() * args.gradient_accumulation_steps
            running_n += 1
            if (b_idx + 1) % args.gradient_accumulation_steps:
                continue
            if scaler:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            bar.update(1)
            if args.logging_steps > 0 and global_step % args.logging_steps == 0:
                mean = all_reduce_mean(running / max(1, running_n))
                if info.is_main:
                    with open(log_file, "a") as f:
                        f.write(json.dumps({"step": global_step, "epoch": epoch, "loss": mean,
                                            "lr": scheduler.get_last_lr()[0]}) + "\n")
                    experiment.log({"loss": mean, "lr": scheduler.get_last_lr()[0]}, step=global_step, epoch=epoch)
                bar.set_postfix(loss=f"{mean:.3f}")
                running, running_n = 0.0, 0
            if args.save_steps > 0 and global_step % args.save_steps == 0:
                save_and_eval(epoch)
                manager.save(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, step=global_step,
                             epoch=epoch, extra={"batch_in_epoch": b_idx + 1})
            if _stop_after is not None and global_step >= _stop_after:
                bar.close()
                experiment.close()
                return {"stopped_at": global_step}
            # Pitfall 16 (F): exactly --max_steps optimizer steps (the original ran one more).
            if global_step >= t_total:
                done = True
                break
    bar.close()
    log.info(" global_step = %d, average loss = %s", global_step, running / max(1, running_n))
    result: dict[str, Any] = {"global_step": global_step}
    if info.is_main:
        metrics_file = eval_dir / "metrics.json"
        save_pretrained(model, out_dir, tokenizer, training_args, metrics_file if metrics_file.is_file() else None)
    if info.is_main and args.do_eval:
        final, _ = load_pretrained(out_dir, require_weights=True, trust=args.trust_checkpoint)
        final.to(device)
        final.zero_fill_visual_slots = model.zero_fill_visual_slots
        res = evaluate(final, val_ds, args.per_gpu_eval_batch_size, device, args)
        log.info("***** Eval results %s *****", args.mode)
        log.info("  perplexity = %s", res["perplexity"])
        update_metrics(eval_dir / "metrics.json", {f"perplexity_{args.mode}": res["perplexity"],
                                                   f"loss_{args.mode}": res["loss"]})
        experiment.log({"loss": res["loss"], "perplexity": res["perplexity"]}, step=global_step, split="val")
        save_pretrained(model, out_dir, tokenizer, training_args, eval_dir / "metrics.json")  # card: final metrics
        if args.eval_all_checkpoints:
            for ckpt in sorted(out_dir.glob("checkpoint-*")):
                m, _ = load_pretrained(ckpt, require_weights=True, trust=args.trust_checkpoint)
                r = evaluate(m.to(device), val_ds, args.per_gpu_eval_batch_size, device, args)
                suffix = ckpt.name.split("-")[-1]
                update_metrics(eval_dir / "metrics.json", {f"perplexity_{suffix}_{args.mode}": r["perplexity"],
                                                           f"loss_{suffix}_{args.mode}": r["loss"]})
        result.update(res)
    result["seconds"] = time.time() - t0
    experiment.close()
    barrier()
    cleanup()
    return result
