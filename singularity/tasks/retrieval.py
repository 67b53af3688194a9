"""Retrieval fine-tuning / evaluation (``tasks/retrieval.py CONFIG.yaml key=value ...``, spec 2.3)."""
from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the monorepo importable (absolute imports only)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.distributed import barrier
from common.errors import InputError, run_cli
from singularity.config import setup_config
from singularity.data.build import as_spec_list, retrieval_eval_loaders, train_meta_loader
from singularity.engine import (check_output_dir, close_log, log_results, max_text_len, prepare_model, prepare_training,
                                save_checkpoint, setup_output_dir, setup_runtime, setup_wandb, train_one_epoch,
                                write_json)
from singularity.evaluation import evaluation, itm_eval
from singularity.models.config_paths import cfg_get
from singularity.models.tokenizer import TextTokenizer

logger = logging.getLogger("singularity")


def retrieval_step(tokenizer, config):
    """Step function: tokenise captions, return the model's loss dict."""
    def step(model, media_type, batch):
        media, captions, idx = batch
        device = next(model.parameters()).device
        text = {k: v.to(device) for k, v in tokenizer(list(captions), max_text_len(config, media_type)).items()}
        return model(media.to(device, non_blocking=True), text, idx.to(device))
    return step


def evaluate_all(model, loaders: dict, tokenizer, runtime, config, scores: dict | None = None) -> dict:
    """``{"<name>/": re-ranked metrics, "<name>_emb/": ITC metrics}`` for every loader (spec 2.6).

    ``scores``, when given, receives ``{name: (i2t_x, t2i_x, i2t_emb, t2i_emb)}`` (numpy score matrices).
    """
    results = {}
    for name, loader in loaders.items():
        logger.info("Evaluating %s (%d media, %d texts)", name, len(loader.dataset), len(loader.dataset.text))
        i2t_x, t2i_x, i2t_emb, t2i_emb = evaluation(model, loader, tokenizer, runtime.device, config,
                                                    runtime.autocast, loader.dataset.media_type)
        ds = loader.dataset
        results[f"{name}/"] = itm_eval(i2t_x, t2i_x, ds.txt2img, ds.img2txt)
        results[f"{name}_emb/"] = itm_eval(i2t_emb, t2i_emb, ds.txt2img, ds.img2txt)
        if cfg_get(config, "skip_unreadable_media", False):  # counted in the results file (issue 11)
            for key in (f"{name}/", f"{name}_emb/"):
                results[key]["skipped_unreadable"] = len(ds.skipped)
        if scores is not None:
            scores[name] = (i2t_x, t2i_x, i2t_emb, t2i_emb)
    for name, metrics in results.items():
        logger.info("%s %s", name, "  ".join(f"{k}: {v}" for k, v in metrics.items()))
    return results


def run_retrieval(config) -> dict:
    """Train (unless ``evaluate``) then evaluate; returns the last evaluation results."""
    runtime = setup_runtime(config)
    check_output_dir(config)  # before any work: a failed launch leaves no directory
    tokenizer = TextTokenizer(str(cfg_get(config, "text_encoder")))
    evaluate_only = bool(cfg_get(config, "evaluate", False))
    test_types = list(cfg_get(config, "test_types", []) or list(cfg_get(config, "test_file").keys()))
    test_loaders = retrieval_eval_loaders(config, test_types)
    train_loader = None if evaluate_only else train_meta_loader(
        config, bool(cfg_get(config, "has_multi_vision_gt", False)), bool(cfg_get(config, "is_paragraph_retrieval", False)))
    if train_loader is not None and len(train_loader.loaders) != 1:
        raise InputError(", ".join(str(spec[0]) for spec in as_spec_list(cfg_get(config, "train_file"))),
                         "retrieval fine-tuning needs a single media type in train_file", field="train_file")
    model, wrapped, checkpoint = prepare_model("retrieval", config, runtime, tokenizer)
    output_dir = setup_output_dir(config, runtime)
    if evaluate_only:
        results = evaluate_all(model, test_loaders, tokenizer, runtime, config)
        if output_dir is not None:
            write_json(output_dir / "eval_res_latest.json", results)
            write_json(output_dir / "eval_res.json", results)
        for name, metrics in results.items():
            log_results(runtime, metrics, 0, name, split="test")
        close_log(runtime)
        return results
    setup_wandb(config, runtime, model)
    optimizer, scheduler, start_epoch, global_step = prepare_training(wrapped, config, len(train_loader),
                                                                      checkpoint, runtime)
    stop_key = cfg_get(config, "stop_key")
    best, results = -float("inf"), {}
    step = retrieval_step(tokenizer, config)
    for epoch in range(start_epoch, int(cfg_get(config, "scheduler.epochs"))):
        global_step, _ = train_one_epoch(wrapped, train_loader, optimizer, scheduler, runtime, config, epoch,
                                         global_step, step, output_dir)
        results = evaluate_all(model, test_loaders, tokenizer, runtime, config)
        for name, metrics in results.items():
            log_results(runtime, metrics, global_step, name, epoch)
        if output_dir is not None:
            write_json(output_dir / "eval_res_latest.json", results)
            # stop_key None: every epoch counts as better -> ckpt_best is the last epoch (spec 5.5)
            if stop_key is None or (stop_key in results and results[stop_key]["r_mean"] > best):
                if stop_key is not None:
                    best = results[stop_key]["r_mean"]
                save_checkpoint(output_dir / "ckpt_best.pth", model, optimizer, scheduler, runtime, config,
                                epoch, global_step)
                write_json(output_dir / "eval_res_best.json", results)
        barrier()
        if cfg_get(config, "debug", False):
            break
    close_log(runtime)
    if output_dir is not None and cfg_get(config, "eval_after_training", True):
        sub = copy.deepcopy(config)
        sub.pretrained_path = str(output_dir / "ckpt_best.pth")
        sub.evaluate = True
        sub.resume = False
        sub.allow_partial = False
        sub.test_types = list(cfg_get(config, "test_file").keys())
        sub.output_dir = str(output_dir / "eval_after_training")
        results = run_retrieval(sub)
    return results


def main(argv=None) -> int:
    """CLI entry: ``CONFIG.yaml key=value ...``."""
    run_retrieval(setup_config(sys.argv[1:] if argv is None else argv, default_config="ret_msrvtt.yaml"))
    return 0


if __name__ == "__main__":
    run_cli(main)
