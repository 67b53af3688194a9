"""QA fine-tuning / evaluation by answer-list ranking (``tasks/vqa.py CONFIG.yaml key=value ...``, spec 4.7)."""
from __future__ import annotations

import copy
import json
import logging
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the monorepo importable (absolute imports only)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from common.distributed import all_gather_object, barrier, get_rank, is_main_process, progress
from common.errors import InputError, run_cli
from singularity.config import setup_config
from singularity.data.annotations import checked_batches
from singularity.data.build import qa_eval_loader, qa_train_loader
from singularity.engine import (check_output_dir, close_log, log_results, prepare_model, prepare_training,
                                save_checkpoint, setup_output_dir, setup_runtime, setup_wandb, train_one_epoch,
                                write_json)
from singularity.evaluation import qa_exact_match, vqa_accuracy
from singularity.models.config_paths import cfg_get
from singularity.models.tokenizer import TextTokenizer

logger = logging.getLogger("singularity")


def load_answer_list(path: str) -> list[str]:
    """The candidate answers (JSON list of str)."""
    if not Path(path).is_file():
        raise InputError(path, "answer list not found", field="answer_list")
    try:
        answers = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON ({err.msg} at line {err.lineno})", field="answer_list") from None
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise InputError(path, "expected a JSON list of answer strings", field="answer_list")
    if not answers:
        raise InputError(path, "the answer list is empty", field="answer_list")
    return answers


def qa_step(tokenizer, config):
    """Step function: tokenise questions/answers, return ``{"loss": ...}``."""
    q_len, a_len = int(cfg_get(config, "max_q_len", 25)), int(cfg_get(config, "max_a_len", 5))

    def step(model, media_type, batch):
        media, questions, answers, weights, n = batch
        device = next(model.parameters()).device
        q = {k: v.to(device) for k, v in tokenizer(list(questions), q_len).items()}
        a = {k: v.to(device) for k, v in tokenizer(list(answers), a_len).items()}
        return {"loss": model(media.to(device), q, a, weights.to(device), n)}
    return step


@torch.no_grad()
def predict(model, loader, tokenizer, answer_list, runtime, config) -> list[dict]:
    """``[{"question_id", "answer"}]`` for this rank's share of ``loader``."""
    model.eval()
    eos = str(cfg_get(config, "eos", "[SEP]"))
    ans = tokenizer([f"{a} {eos}" for a in answer_list], int(cfg_get(config, "max_a_len", 5)))
    ans = {k: v.to(runtime.device) for k, v in ans.items()}
    k = int(cfg_get(config, "k_test", 128))
    out = []
    for media, questions, qids in progress(checked_batches(loader), total=len(loader), desc="QA eval", leave=False):
        q = {kk: v.to(runtime.device) for kk, v in tokenizer(list(questions), int(cfg_get(config, "max_q_len", 25))).items()}
        with runtime.autocast():
            topk_ids, _ = model.rank_answers(media.to(runtime.device), q, ans["input_ids"], ans["attention_mask"], k)
        for qid, ids in zip(qids, topk_ids[:, 0].tolist()):
            out.append({"question_id": qid.item() if torch.is_tensor(qid) else qid, "answer": answer_list[ids]})
    return out


def evaluate_split(model, name, loader, tokenizer, answer_list, runtime, config, output_dir, suffix="latest"):
    """Predict, merge ranks (``dist_res``), write ``<split>_<suffix>.json``; accuracy dict or None."""
    preds = predict(model, loader, tokenizer, answer_list, runtime, config)
    if output_dir is not None:
        (output_dir / "dist_res").mkdir(exist_ok=True)
        (output_dir / "dist_res" / f"{name}_{suffix}_rank{get_rank()}.json").write_text(json.dumps(preds))
    merged, seen = [], set()
    for part in all_gather_object(preds):
        for p in part:
            if p["question_id"] not in seen:  # the distributed sampler pads with repeats
                seen.add(p["question_id"])
                merged.append(p)
    if output_dir is not None:
        write_json(output_dir / f"{name}_{suffix}.json", merged)
    anno = loader.dataset.anno
    dataset_name = str(cfg_get(config, "dataset_name", "msrvtt"))
    if dataset_name == "vqa":
        if list(cfg_get(config, "test_types"))[0] != "minival" or "answer" not in anno[0]:
            return None  # vqa test predictions are only written, for the evaluation server (spec 5.8)
        accuracy = vqa_accuracy(merged, anno)
    elif "answer" not in anno[0]:
        return None
    else:
        accuracy = qa_exact_match(merged, anno)
    if cfg_get(config, "skip_unreadable_media", False):  # skipped questions are left out and counted (issue 11)
        accuracy["skipped_unreadable"] = len(loader.dataset.skipped)
    return accuracy


def run_vqa(config) -> dict:
    """Train (unless ``evaluate``) and evaluate; returns ``{split: accuracy dict}``."""
    runtime = setup_runtime(config)
    check_output_dir(config)  # before any work: a failed launch leaves no directory
    tokenizer = TextTokenizer(str(cfg_get(config, "text_encoder")))
    answer_list = load_answer_list(str(cfg_get(config, "answer_list")))
    evaluate_only = bool(cfg_get(config, "evaluate", False))
    test_types = list(cfg_get(config, "test_types"))
    loaders = {name: qa_eval_loader(config, name) for name in test_types}
    train_loader = None if evaluate_only else qa_train_loader(config)
    model, wrapped, checkpoint = prepare_model("vqa", config, runtime, tokenizer)
    output_dir = setup_output_dir(config, runtime)

    def evaluate_all(suffix="latest"):
        res = {}
        for name, loader in loaders.items():
            acc = evaluate_split(model, name, loader, tokenizer, answer_list, runtime, config, output_dir, suffix)
            if acc is not None:
                res[name] = acc
                logger.info("QA %s: %s", name, acc)
        return res

    if evaluate_only:
        results = evaluate_all()
        if output_dir is not None:
            for name, acc in results.items():
                write_json(output_dir / f"{name}_acc_eval.json", acc, indent=4)
                if is_main_process():
                    shutil.copy(output_dir / f"{name}_latest.json", output_dir / f"{name}_eval.json")
            write_json(output_dir / "eval_res_best.json", results, indent=4)
        for name, acc in results.items():
            log_results(runtime, acc, 0, f"{name}/", split="test")
        close_log(runtime)
        return results
    setup_wandb(config, runtime, model)
    optimizer, scheduler, start_epoch, global_step = prepare_training(wrapped, config, len(train_loader),
                                                                      checkpoint, runtime)
    stop_key = cfg_get(config, "stop_key")
    best, results = -float("inf"), {}
    step = qa_step(tokenizer, config)
    for epoch in range(start_epoch, int(cfg_get(config, "scheduler.epochs"))):
        global_step, _ = train_one_epoch(wrapped, train_loader, optimizer, scheduler, runtime, config, epoch,
                                         global_step, step, output_dir)
        results = evaluate_all()
        for name, acc in results.items():
            log_results(runtime, acc, global_step, f"{name}/", epoch)
        if output_dir is not None and (stop_key is None or (stop_key in results and results[stop_key]["overall"] > best)):
            if stop_key is not None:
                best = results[stop_key]["overall"]
            save_checkpoint(output_dir / "ckpt_best.pth", model, optimizer, scheduler, runtime, config, epoch, global_step)
            write_json(output_dir / "eval_res_best.json", results, indent=4)
            if is_main_process():
                for name in loaders:
                    shutil.copy(output_dir / f"{name}_latest.json", output_dir / f"{name}_best.json")
        barrier()
        if cfg_get(config, "debug", False):
            break
    close_log(runtime)
    if output_dir is not None and cfg_get(config, "eval_after_training", True):
        sub = copy.deepcopy(config)
        sub.pretrained_path = str(output_dir / "ckpt_best.pth")
        sub.evaluate, sub.resume, sub.allow_partial = True, False, False
        sub.test_types = ["minival"] if str(cfg_get(config, "dataset_name")) == "vqa" else ["val", "test"]
        sub.output_dir = str(output_dir / "eval_after_training")
        results = run_vqa(sub)
    return results


def main(argv=None) -> int:
    """CLI entry: ``CONFIG.yaml key=value ...``."""
    run_vqa(setup_config(sys.argv[1:] if argv is None else argv, default_config="qa_msrvtt.yaml"))
    return 0


if __name__ == "__main__":
    run_cli(main)
