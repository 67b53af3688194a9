"""Pre-training with ITC + ITM + MLM on image and/or video corpora (``tasks/pretrain.py CONFIG.yaml k=v ...``)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the monorepo importable (absolute imports only)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.distributed import barrier, is_main_process
from common.errors import InputError, run_cli
from singularity.config import setup_config
from singularity.data.build import retrieval_eval_loaders, train_meta_loader
from singularity.engine import (check_output_dir, close_log, log_results, prepare_model, prepare_training,
                                save_checkpoint, setup_output_dir, setup_runtime, setup_wandb, train_one_epoch,
                                write_json)
from singularity.models.config_paths import cfg_get
from singularity.models.tokenizer import TextTokenizer
from singularity.tasks.retrieval import evaluate_all, retrieval_step

logger = logging.getLogger("singularity")


def run_pretrain(config) -> dict:
    """Train ``scheduler.epochs`` epochs; zero-shot retrieval on every ``test_file`` entry after each epoch."""
    if cfg_get(config, "evaluate", False):
        raise InputError("command line", "tasks/pretrain.py has no evaluate mode: evaluate with eval_ret.sh / "
                                         "tasks/retrieval.py", field="evaluate")
    runtime = setup_runtime(config)
    check_output_dir(config)  # before any work: a failed launch leaves no directory
    tokenizer = TextTokenizer(str(cfg_get(config, "text_encoder")))
    train_loader = train_meta_loader(config)
    test_loaders = retrieval_eval_loaders(config, list(cfg_get(config, "test_file").keys()))
    model, wrapped, checkpoint = prepare_model("pretrain", config, runtime, tokenizer)
    output_dir = setup_output_dir(config, runtime)
    setup_wandb(config, runtime, model)
    optimizer, scheduler, start_epoch, global_step = prepare_training(wrapped, config, len(train_loader),
                                                                      checkpoint, runtime)
    step = retrieval_step(tokenizer, config)
    results = {}
    for epoch in range(start_epoch, int(cfg_get(config, "scheduler.epochs"))):
        global_step, _ = train_one_epoch(wrapped, train_loader, optimizer, scheduler, runtime, config, epoch,
                                         global_step, step, output_dir)
        results = evaluate_all(model, test_loaders, tokenizer, runtime, config)
        for name, metrics in results.items():
            log_results(runtime, metrics, global_step, name, epoch)
        if output_dir is not None:
            # overwritten every epoch with that epoch's zero-shot results (not the best; pitfall 9.13 K)
            write_json(output_dir / "eval_res_best.json", results)
            save_checkpoint(output_dir / f"ckpt_{epoch:02d}.pth", model, optimizer, scheduler, runtime, config,
                            epoch, global_step)
            if is_main_process():
                # the original deletes ckpt_{e-3} and older: the last THREE are kept (pitfall 9.13 K)
                for old in output_dir.glob("ckpt_*.pth"):
                    if old.stem[5:].isdigit() and int(old.stem[5:]) < epoch - 2:
                        old.unlink()
        barrier()
        if cfg_get(config, "debug", False):
            break
    close_log(runtime)
    return results


def main(argv=None) -> int:
    """CLI entry: ``CONFIG.yaml key=value ...``."""
    run_pretrain(setup_config(sys.argv[1:] if argv is None else argv, default_config="pretrain.yaml"))
    return 0


if __name__ == "__main__":
    run_cli(main)
