"""Training and evaluation loops of both stages (spec 5): what main_task_retrieval.py and
main_task_caption.py run. One process or torchrun (gloo on CPU, nccl on GPU)."""
from __future__ import annotations

import logging
import logging.handlers
import math
import os
import sys
import time
from pathlib import Path

import torch

from common.checkpoint import CheckpointManager, atomic_torch_save, atomic_write_json
from common.distributed import (barrier, cleanup, init_distributed, is_main_process, make_sampler, progress,
                                seed_everything, wrap_model)
from common.errors import InputError
from common.experiment_log import ExperimentLog
from common.safe_pickle import torch_load
from common.threads import apply_num_threads
from clip4idc.convert import new_to_original, to_original_precision
from clip4idc.data import ClevrChange, Sampler, build_dataset
from clip4idc.data.common import ItemLoader, read_json
from clip4idc.data.ier import SPLIT_FILES, ier_gt
from clip4idc.data.spot import spot_gt
from clip4idc.decoding import decode_captions
from clip4idc.evaluation import clevr_breakdown, group_similarity, retrieval_metrics, score_captions
from clip4idc.factory import create_model, save_config_sidecar
from clip4idc.optim import build_optimizer, freeze_layers
from clip4idc.speed import autocast_for, compile_model, set_attn_implementation
from clip4idc.tokenizer import get_tokenizer
from clip4idc.visualize import save_grid_png, save_pair_png

LOGGER_NAME = "clip4idc"


def setup_logging() -> logging.Logger:
    """Console handler with the original's format (INFO on rank 0, warnings elsewhere), plus a buffer that
    `attach_log_file` hands to log.txt once the run's inputs are validated (a failed launch writes nothing)."""
    log = logging.getLogger(LOGGER_NAME)
    for handler in log.handlers:
        handler.close()
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO if is_main_process() else logging.WARNING)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s -   %(message)s", datefmt="%m/%d/%Y %H:%M:%S"))
    log.addHandler(console)
    log.addHandler(logging.handlers.MemoryHandler(capacity=1 << 30, flushLevel=logging.CRITICAL + 1))
    return log


def attach_log_file(log: logging.Logger, output_dir: Path) -> None:
    """Replace the setup buffer by output_dir/log.txt (rank 0; the original's file format), flushing it there."""
    for handler in [h for h in log.handlers if isinstance(h, logging.handlers.MemoryHandler)]:
        if is_main_process():
            file_handler = logging.FileHandler(output_dir / "log.txt")
            file_handler.setFormatter(logging.Formatter("%(asctime)s:%(levelname)s: %(message)s"))
            handler.setTarget(file_handler)
            handler.flush()
            log.addHandler(file_handler)
        log.removeHandler(handler)
        handler.close()


def _to_device(batch, device):
    return [b.to(device) if isinstance(b, torch.Tensor) else b for b in batch]


def _images(x: torch.Tensor) -> torch.Tensor:
    """(B,1,3,H,W) loader images -> (B,3,H,W) float32."""
    return x.view(x.shape[0], *x.shape[-3:]).float()


def _ids(x: torch.Tensor) -> torch.Tensor:
    return x.view(x.shape[0], -1)


def step_loss(model, batch, task: str, datatype: str) -> torch.Tensor:
    """Training loss of one loader batch (tuple order of spec 3.3)."""
    if task == "retrieval":
        text, _, _, bef, aft, _ = batch
        return model(_images(bef), _images(aft), text_ids=_ids(text))
    if datatype == "clevr":
        (_, _, _, bef, sc, nsc, _, in_ids, dec_mask, out_ids, no_in, no_mask, no_out, _) = batch
        return model(_images(bef), _images(sc), in_ids=_ids(in_ids), dec_mask=_ids(dec_mask), out_ids=_ids(out_ids),
                     no_aft=_images(nsc), no_in_ids=_ids(no_in), no_dec_mask=_ids(no_mask), no_out_ids=_ids(no_out))
    (_, _, _, bef, aft, _, in_ids, dec_mask, out_ids, _) = batch
    return model(_images(bef), _images(aft), in_ids=_ids(in_ids), dec_mask=_ids(dec_mask), out_ids=_ids(out_ids))


def autocast_context(args, device: torch.device):
    """AMP context of --fp16 (CUDA float16) / --bf16, else a no-op (training, evaluation and decoding)."""
    if args.fp16 and device.type != "cuda":
        raise InputError("--fp16", "float16 autocast needs CUDA; use --bf16 on CPU")
    return autocast_for(device, fp16=args.fp16, bf16=args.bf16)


def unused_parameters(model, task: str, linear_patch: str = "2d") -> list[str]:
    """Trainable parameters the stage's loss never reaches (DDP needs find_unused_parameters only for these):
    the caption stage skips the text tower (spec 9.15) except its token/position embeddings (tied to the
    decoder) and the temperature; `--linear_patch 3d` patchifies with conv2, leaving the 2-D patch conv."""
    tied = ("clip.text.embeddings.token_embedding.", "clip.text.embeddings.position_embedding.")
    names = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if task == "caption" and (name.startswith("clip.text.") and not name.startswith(tied)
                                  or name == "clip.logit_scale"):
            names.append(name)
        elif linear_patch == "3d" and name.startswith("clip.visual.embeddings.patch_embedding."):
            names.append(name)
    return names


# --- evaluation -----------------------------------------------------------------------------------
@torch.no_grad()
def eval_retrieval(model, dataset, args, device, log) -> dict[str, float]:
    """Multi-sentence retrieval evaluation (spec 5.5); logs the original's lines."""
    model.eval()
    loader = ItemLoader(dataset, batch_size=args.batch_size_val, shuffle=False, num_workers=args.num_thread_reader)
    last_rows = {c - 1 for c in dataset.cut_off_points}
    texts, pairs, offset = [], [], 0
    for batch in progress(loader, desc="eval", leave=False):
        text, _, _, bef, aft, _ = _to_device(batch, device)
        t, _ = model.encode_text(_ids(text))
        texts.append(torch.nn.functional.normalize(t.float(), dim=-1))
        rows = [i for i in range(text.shape[0]) if offset + i in last_rows]
        if rows:
            v, _ = model.encode_pair(_images(bef[rows]), _images(aft[rows]))
            pairs.append(torch.nn.functional.normalize(v.float(), dim=-1))
        offset += text.shape[0]
    sim = (model.clip.logit_scale.exp() * torch.cat(texts) @ torch.cat(pairs).t()).float().cpu().numpy()
    log.warning("Eval under the multi-sentence per pair setting.")
    log.warning("sentence num: %d, pair num: %d", sim.shape[0], sim.shape[1])
    log.info("before reshape, sim matrix size: %d x %d", *sim.shape)
    grouped = group_similarity(sim, dataset.cut_off_points)
    log.info("after reshape, sim matrix size: %d x %d x %d", *grouped.shape)
    m = retrieval_metrics(grouped, ties=getattr(args, "retrieval_ties", "strict"))
    log.info("Text-to-Image-Pair:")
    log.info("\t>>>  R@1: %.1f - R@5: %.1f - R@10: %.1f - Median R: %.1f - Mean R: %.1f",
             m["R1"], m["R5"], m["R10"], m["MR"], m["MeanR"])
    log.info("Image-Pair-to-Text:")
    log.info("\t>>>  V2T$R@1: %.1f - V2T$R@5: %.1f - V2T$R@10: %.1f - V2T$Median R: %.1f - V2T$Mean R: %.1f",
             m["V2T$R1"], m["V2T$R5"], m["V2T$R10"], m["V2T$MR"], m["V2T$MeanR"])
    return m


def load_gt(args, log) -> tuple[dict, str]:
    """(COCO GT dict, its path) from --gt_dir, or built from the data files when the file is missing."""
    path = Path(args.gt_dir) / f"{args.datatype}_total_change_captions_reformat.json"
    if path.is_file():
        gt = read_json(path)
        anns = gt.get("annotations") if isinstance(gt, dict) else None
        if not isinstance(anns, list) or not anns:
            raise InputError(path, "expected a COCO caption GT object with a non-empty list", field="annotations")
        for i, ann in enumerate(anns):
            if not isinstance(ann, dict) or not isinstance(ann.get("caption"), str) or "image_id" not in ann:
                raise InputError(path, "expected {image_id, caption (a string)}", record=i, field="annotations")
        return gt, str(path)
    if args.datatype == "clevr":
        gt = ClevrChange(args.data_path).gt()
    elif args.datatype == "spot" and (Path(args.data_path) / "test.json").is_file():
        gt = spot_gt(Path(args.data_path) / "test.json")
    elif args.datatype == "ier":
        gt = ier_gt(Path(args.data_path) / SPLIT_FILES["test"])
    else:
        raise InputError(path, "GT file not found (build it with preprocess/eval_utils.py)")
    log.warning("%s not found: GT built from %s", path, args.data_path)
    return gt, str(path)


@torch.no_grad()
def generate(model, dataset, args, device, tokenizer) -> tuple[dict[str, str], list[dict]]:
    """Captions of every test pair (CLEVR: semantic pairs, then distractor pairs `_n`) and PNG items."""
    model.eval()
    loader = ItemLoader(dataset, batch_size=args.batch_size_val, shuffle=False, num_workers=args.num_thread_reader)
    sem, dis, vis = {}, {}, []
    for batch in progress(loader, desc="decode", leave=False):
        batch = _to_device(batch, device)
        bef, names = _images(batch[3]), batch[-1]
        aft = _images(batch[4])
        caps = decode_captions(model, tokenizer, bef, aft, args.max_words, args.beam_size, args.length_penalty)
        sem.update(zip(names, caps))
        n_caps = None
        if args.datatype == "clevr":
            nsc = _images(batch[5])
            n_caps = decode_captions(model, tokenizer, bef, nsc, args.max_words, args.beam_size, args.length_penalty)
            dis.update((n + "_n", c) for n, c in zip(names, n_caps))
        for i in range(len(names)):
            if len(vis) >= 2 * getattr(args, "n_visualize", 0):
                break
            vis.append({"id": names[i], "bef": bef[i].cpu().numpy(), "aft": aft[i].cpu().numpy(), "generated": caps[i]})
            if n_caps is not None:
                vis.append({"id": names[i] + "_n", "bef": bef[i].cpu().numpy(), "aft": nsc[i].cpu().numpy(),
                            "generated": n_caps[i]})
    return {**sem, **dis}, vis


def write_visuals(model, vis: list[dict], refs: dict[str, list[str]], out_dir: Path, device, limit: int) -> list[Path]:
    """One PNG per visualised pair (with the CLS joint-attention map) plus a contact sheet."""
    paths = []
    grid = model.clip.cfg.grid
    for item in vis[:limit]:
        bef = torch.from_numpy(item["bef"])[None].to(device)
        aft = torch.from_numpy(item["aft"])[None].to(device)
        with torch.no_grad():
            _, _, attn = model.encode_pair(bef, aft, return_attention=True)
        stem = item["id"].replace("/", "_").replace(".png", "")
        paths.append(save_pair_png(out_dir / f"{stem}.png", item["bef"], item["aft"],
                                   item["generated"], refs.get(item["id"]), attn[0].float().cpu().numpy(), grid,
                                   title=item["id"]))
    if vis:
        sheet = [dict(it, reference=(refs.get(it["id"]) or [""])[0]) for it in vis[:limit]]
        paths.append(save_grid_png(out_dir / "overview.png", sheet))
    return paths


def eval_caption(model, dataset, args, device, tokenizer, log, tag: str,
                 gt: tuple[dict, str] | None = None, skipped: int = 0) -> dict[str, float]:
    """Decode, write hyp_ep_{tag}.json, score via common.metrics (+ CLEVR per-type), write PNGs.
    `gt` is load_gt's (dict, path), read here when not given; `skipped` items are counted in scores_ep_*."""
    out = Path(args.output_dir)
    gt, gt_path = gt if gt is not None else load_gt(args, log)
    hyps, vis = generate(model, dataset, args, device, tokenizer)
    hyp_path = out / f"hyp_ep_{tag}.json"
    atomic_write_json(hyp_path, [{"caption": c, "image_id": i} for i, c in hyps.items()])
    metrics = [m.strip() for m in args.caption_metrics.split(",") if m.strip()]
    scores = score_captions(hyps, gt, metrics, gt_path)
    log.info(">>>  BLEU_1: %.4f, BLEU_2: %.4f, BLEU_3: %.4f, BLEU_4: %.4f", *(scores.get(f"Bleu_{n}", float("nan")) for n in range(1, 5)))
    log.info(">>>  METEOR: %.4f, ROUGE_L: %.4f, CIDEr: %.4f", scores.get("METEOR", float("nan")),
             scores.get("ROUGE_L", float("nan")), scores.get("CIDEr", float("nan")))
    report = {"total": scores}
    if args.datatype == "clevr" and (Path(args.data_path) / "type_mapping.json").is_file():
        report = clevr_breakdown(hyps, gt, ClevrChange(args.data_path).type_mapping(), metrics, gt_path)
        for name, s in report.items():
            if s:
                log.info("%s: %s", name, ", ".join(f"{k} {v:.4f}" for k, v in s.items()))
    atomic_write_json(out / f"scores_ep_{tag}.json", dict(report, skipped_items=skipped) if skipped else report)
    refs = {}
    for ann in gt.get("annotations", []):
        refs.setdefault(str(ann["image_id"]), []).append(ann["caption"])
    final = tag == "eval" or tag == str(args.epochs - 1)  # PNGs of the final model only (they cost ~0.1 s each)
    if getattr(args, "n_visualize", 0) > 0 and final:
        write_visuals(model, vis, refs, out / f"vis_ep_{tag}", device, 2 * args.n_visualize)
    return scores


# --- the run --------------------------------------------------------------------------------------
def _effective_parameters(args, log) -> None:
    log.info("Effective parameters:")
    for key in sorted(vars(args)):
        log.info("  <<< %s: %s", key, getattr(args, key))


def _check_output_dir(args, task: str) -> Path:
    """The output directory, refused (before anything is written) when the run would overwrite results."""
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a directory", field="--output_dir")
    if args.do_train and not args.resume_model and out.is_dir():
        if CheckpointManager(out / "resume").latest() is not None:
            raise InputError(out, "already holds a training run; pass --resume_model "
                                  f"{out / 'resume'} to continue it, or choose another --output_dir")
        taken = sorted(p.name for p in out.glob("pytorch_model.bin.*"))
        if taken:
            raise InputError(out / taken[0], "exists; a new training run would overwrite it (choose another "
                                             "--output_dir)", field="--output_dir")
    if not args.do_train and task == "caption" and (out / "hyp_ep_eval.json").exists():
        raise InputError(out / "hyp_ep_eval.json", "exists; refusing to overwrite (choose another --output_dir)")
    return out


def split_file(args, subset: str) -> Path:
    """The data file that lists the items of `subset` (named in errors about the split)."""
    root = Path(args.data_path)
    if args.datatype == "clevr":
        return root / "splits.json"
    if args.datatype == "spot":
        return root / f"reformat_{subset}.json"
    return root / SPLIT_FILES[subset]


def seeding_enabled(args, task: str) -> bool:
    """Always seed (spec 9.4 fix) unless --seed_only_clevr asks for the original's unseeded Spot captioning."""
    return not (task == "caption" and getattr(args, "seed_only_clevr", False) and args.datatype != "clevr")


def run(args, task: str, stop_after_epoch: int | None = None) -> dict:
    """Train and/or evaluate the `task` stage as configured by `args`; returns the best/last metrics.

    `stop_after_epoch` ends the run after that epoch as if killed (used by the resume test)."""
    apply_num_threads(args.num_threads)  # the one thread policy (issue 15), before any torch work
    info = init_distributed(device=args.device)
    device = info.device
    if args.fp16 and device.type != "cuda":
        raise InputError("--fp16", "float16 autocast needs CUDA; use --bf16 on CPU")
    out = _check_output_dir(args, task)
    log = setup_logging()
    for name in ("world_size", "rank", "n_gpu", "local_rank"):
        if getattr(args, name) not in (0, 1) or name == "local_rank" and args.local_rank != info.local_rank:
            log.info("--%s=%s is overwritten from the launcher", name, getattr(args, name))
    args.world_size, args.rank, args.local_rank, args.n_gpu = info.world_size, info.rank, info.local_rank, info.world_size
    torch.set_flush_denormal(True)  # spec 10: a tiny CPU run slows ~25x without it
    if seeding_enabled(args, task):
        seed_everything(args.seed, rank_aware=True)
        os.environ["PYTHONHASHSEED"] = str(args.seed)
    if args.batch_size % (info.world_size * args.gradient_accumulation_steps):
        raise InputError("--batch_size", f"{args.batch_size} is not divisible by world size x accumulation "
                         f"({info.world_size} x {args.gradient_accumulation_steps})")
    args.batch_size = args.batch_size // args.gradient_accumulation_steps
    _effective_parameters(args, log)
    log.info("device: %s n_gpu: %d", device, info.world_size)
    tokenizer = get_tokenizer(args.bpe_path)

    model, clip_cfg, decoder_cfg = create_model(args, task, log)
    log.info("Stage-One:%s, Stage-Two:%s", task == "retrieval", task == "caption")
    frozen = freeze_layers(model, args.freeze_layer_num, task, args.datatype, args.linear_patch)
    for name in frozen:
        print(name)
    model.to(device)
    set_attn_implementation(model, args.attn_implementation)
    if args.compile:
        compile_model(model)

    sampler = Sampler(per_index=args.per_index_rng, seed=args.seed)
    size = clip_cfg.image_resolution  # spec 9.23 fix: loaders resize to the model's resolution

    def dataset(subset):
        return build_dataset(args.datatype, task, subset, args.data_path, args.features_path, tokenizer,
                             args.max_words, size, sampler, args.skip_missing_images)

    eval_subset = "val" if args.select_on_val else "test"
    eval_set = dataset(eval_subset) if is_main_process() else None
    if eval_set is not None:
        log.info("***** Running %s *****", eval_subset)
        log.info("  Num examples = %d", len(eval_set))
        log.info("  Batch size = %d", args.batch_size_val)
        log.info("  Num steps = %d", math.ceil(len(eval_set) / args.batch_size_val))
        if len(eval_set) == 0:
            raise InputError(split_file(args, eval_subset), f"the {eval_subset} split holds no items: nothing to "
                             "evaluate", field=eval_subset)
    train_set = dataset("train") if args.do_train else None
    per_process = args.batch_size // info.world_size
    if train_set is not None and len(train_set) < per_process:
        raise InputError(split_file(args, "train"), f"the train split holds {len(train_set)} items, fewer than "
                         f"one batch ({per_process} per process)", field="train")

    gt = load_gt(args, log) if task == "caption" and eval_set is not None else None


    def open_outputs() -> ExperimentLog:
        """Called once the inputs are validated: from here on the run writes into the output directory."""
        if is_main_process():
            out.mkdir(parents=True, exist_ok=True)
        attach_log_file(log, out)
        if is_main_process():
            save_config_sidecar(out, clip_cfg, decoder_cfg, args.max_words)
        config = {k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v) for k, v in vars(args).items()}
        return ExperimentLog(out, report_to=args.report_to, config=dict(config, task=task), enabled=is_main_process())

    metric_names = [m.strip() for m in getattr(args, "caption_metrics", "").split(",") if m.strip()]
    score_name = "R1" if task == "retrieval" else "CIDEr" if "CIDEr" in metric_names else \
        "Bleu_4" if any(m.lower() == "bleu" for m in metric_names) else metric_names[0]

    skipped = len(getattr(eval_set, "skipped", []))
    if skipped:
        log.warning("--skip_missing_images: %d scenes of the %s split have no images and are left out (counted as "
                    "skipped_items in the results)", skipped, eval_subset)

    def evaluate(tag):
        with autocast_context(args, device):  # --bf16/--fp16 also for evaluation and decoding
            if task == "retrieval":
                m = eval_retrieval(model, eval_set, args, device, log)
                score = m["R1"]
            else:
                m = eval_caption(model, eval_set, args, device, tokenizer, log, tag, gt, skipped)
                score = m[score_name] if score_name in m else 0.0
        if skipped:
            m["skipped_items"] = skipped
        return m, score

    if not args.do_train:
        xlog = open_outputs()
        metrics = {}
        if is_main_process():
            metrics, _ = evaluate("eval")
            atomic_write_json(out / "eval_metrics.json", metrics)
            xlog.log(scalar_metrics(metrics), step=0, split=eval_subset)
        xlog.close()
        barrier()
        cleanup()
        return metrics

    train_sampler = make_sampler(train_set, shuffle=True, seed=0, drop_last=True)
    loader = ItemLoader(train_set, batch_size=per_process, sampler=train_sampler, drop_last=True,
                        num_workers=args.num_thread_reader, pin_memory=device.type == "cuda",
                        persistent_workers=args.num_thread_reader > 0)
    if len(loader) == 0:
        raise InputError(args.data_path, f"training split smaller than one batch ({per_process} per process)")
    t_total = int(math.ceil(len(loader) / args.gradient_accumulation_steps)) * args.epochs
    optimizer = build_optimizer(model, task, args.lr, args.coef_lr, t_total, args.warmup_proportion)
    scaler = torch.amp.GradScaler("cuda") if args.fp16 else None
    manager = CheckpointManager(out / "resume", keep_last=1)
    start_epoch, global_step, best_score, best_file, stale = 0, 0, 0.00001, "", 0
    if args.resume_model:
        start_epoch, global_step, best_score, best_file, stale = _resume(args, model, optimizer, scaler, manager, log)
    xlog = open_outputs()
    unused = unused_parameters(model, task, args.linear_patch)
    ddp = wrap_model(model, info, find_unused_parameters=bool(unused))
    log.info("***** Running training *****")
    log.info("  Num examples = %d", len(train_set))
    log.info("  Batch size = %d", args.batch_size)
    log.info("  Num steps = %d", t_total * args.gradient_accumulation_steps)
    last_metrics: dict = {}
    for epoch in range(start_epoch, args.epochs):
        train_sampler.set_epoch(epoch)
        sampler.epoch = epoch
        ddp.train()
        total_loss, start = 0.0, time.time()
        bar = progress(loader, desc=f"epoch {epoch + 1}/{args.epochs}")
        for step, batch in enumerate(bar):
            batch = _to_device(batch, device)
            with autocast_context(args, device):
                loss = step_loss(ddp, batch, task, args.datatype) / args.gradient_accumulation_steps
            (scaler.scale(loss) if scaler else loss).backward()
            total_loss += float(loss.detach())
            if (step + 1) % args.gradient_accumulation_steps == 0:
                if scaler:
                    scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad()
                model.clip.clamp_logit_scale()
                global_step += 1
                if global_step % args.n_display == 0:
                    lrs = "-".join(sorted({"%.9f" % (lr + 0.0) for lr in optimizer.schedule_lrs()}))
                    sec = (time.time() - start) / (step + 1)
                    log.info("Epoch: %d/%s, Step: %d/%d, Lr: %s, Loss: %f, Time/step: %f", epoch + 1, args.epochs,
                             step + 1, len(loader), lrs, float(loss.detach()), sec)
                    lr_values = optimizer.schedule_lrs()
                    xlog.log({"loss": float(loss.detach()),
                              "lr": max(lr_values), "lr_min": min(lr_values), "time_per_step": sec},
                             step=global_step, epoch=epoch)
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        train_loss = total_loss / len(loader)
        log.info("Epoch %d/%s Finished, Train Loss: %f", epoch + 1, args.epochs, train_loss)
        score = None
        if is_main_process():
            model_file = out / f"pytorch_model.bin.{epoch}"
            weights = new_to_original(model.state_dict())
            if args.save_original_precision:
                weights = to_original_precision(weights)
            atomic_torch_save(weights, model_file)
            log.info("Model saved to %s", model_file)
            last_metrics, score = evaluate(str(epoch))
            if best_score <= score:
                best_score, best_file, stale = score, str(model_file), 0
            else:
                stale += 1
            log.info("The best model is: %s, the %s is: %.4f", best_file, score_name, best_score)
            xlog.log({"epoch_loss": train_loss}, step=global_step, epoch=epoch)
            xlog.log(scalar_metrics(last_metrics), step=global_step, epoch=epoch, split=eval_subset)
        state = torch.tensor([best_score, float(stale)], dtype=torch.float64)
        if info.distributed:
            torch.distributed.broadcast(state, src=0)
        best_score, stale = float(state[0]), int(state[1])
        path = manager.save(model=model, optimizer=optimizer, scaler=scaler, step=global_step, epoch=epoch,
                            metrics={"score": best_score}, config={"task": task},
                            extra={"best_score": best_score, "best_file": best_file, "stale": stale})
        log.info("Optimizer saved to %s", path)
        if task == "caption" and stale > 10:  # original early stopping: 11 non-improving epochs
            log.info("Early stopping after %d epochs without improvement", stale)
            break
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
    xlog.close()
    barrier()
    cleanup()
    return {"best_score": best_score, "best_file": best_file, "last": last_metrics}


def scalar_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Flat {name: value} of the numeric results (CLEVR's per-subset scores become `subset/metric`)."""
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(scalar_metrics(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat


def _resume(args, model, optimizer, scaler, manager, log) -> tuple[int, int, float, str, int]:
    """Restore from --resume_model: this code's resume dir/step dir, or the original's dict format."""
    path = Path(args.resume_model)
    if path.is_dir():
        target = CheckpointManager(path).latest() if not path.name.startswith("step_") else path
        if target is None:
            raise InputError(path, "no checkpoint to resume from")
        state = manager.load(target, model=model, optimizer=optimizer, scaler=scaler)
        extra = state.extra
        log.info("Resumed from %s (epoch %d, step %d)", target, state.epoch, state.step)
        return state.epoch + 1, state.step, extra.get("best_score", 0.00001), extra.get("best_file", ""), extra.get("stale", 0)
    obj = torch_load(path, trust=args.trust_checkpoint)
    if not isinstance(obj, dict) or "optimizer_state_dict" not in obj or "epoch" not in obj:
        raise InputError(path, "not a resume checkpoint (expected a resume/ directory or {'epoch', "
                               "'optimizer_state_dict', 'loss'})")
    try:
        optimizer.load_state_dict(obj["optimizer_state_dict"])
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise InputError(path, f"optimizer state does not fit this model's parameter groups ({err})",
                         field="optimizer_state_dict") from None
    log.info("Resumed optimizer from %s (original format; model weights come from --init_model)", path)
    return int(obj["epoch"]) + 1, 0, 0.00001, "", 0
