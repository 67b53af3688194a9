"""MSRVTT multiple-choice evaluation with a retrieval model (``tasks/retrieval_mc.py CONFIG.yaml k=v ...``)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the monorepo importable (absolute imports only)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from common.distributed import barrier, is_main_process
from common.errors import run_cli
from singularity.config import setup_config
from singularity.data.build import mc_loader
from singularity.engine import (check_output_dir, close_log, log_results, prepare_model, setup_output_dir,
                                setup_runtime, write_json)
from singularity.evaluation import evaluate_mc
from singularity.models.config_paths import cfg_get
from singularity.models.tokenizer import TextTokenizer

logger = logging.getLogger("singularity")


def run_mc(config) -> float:
    """Accuracy (%) on ``test_file[test_types[0]]``; writes eval_res.json and prediction_scores.pth (spec 2.6)."""
    runtime = setup_runtime(config)
    check_output_dir(config)  # before any work: a failed launch leaves no directory
    tokenizer = TextTokenizer(str(cfg_get(config, "text_encoder")))
    name = list(cfg_get(config, "test_types", ["mc_test"]))[0]
    loader = mc_loader(config, name)
    model, _, _ = prepare_model("retrieval", config, runtime, tokenizer)
    output_dir = setup_output_dir(config, runtime)
    accuracy, predictions = evaluate_mc(model, loader, tokenizer, runtime.device, config, runtime.autocast)
    logger.info("MC accuracy on %s: %.2f", name, accuracy)
    if output_dir is not None and is_main_process():
        result = {"test": accuracy}
        if cfg_get(config, "skip_unreadable_media", False):  # skipped videos are left out and counted (issue 11)
            result["skipped_unreadable"] = len(loader.dataset.skipped)
        write_json(output_dir / "eval_res.json", result)
        torch.save(predictions, output_dir / "prediction_scores.pth")
    log_results(runtime, {"accuracy": accuracy}, 0, f"{name}/", split="test")
    close_log(runtime)
    barrier()
    return accuracy


def main(argv=None) -> int:
    """CLI entry: ``CONFIG.yaml key=value ...``."""
    run_mc(setup_config(sys.argv[1:] if argv is None else argv, default_config="ret_msrvtt_mc.yaml"))
    return 0


if __name__ == "__main__":
    run_cli(main)
