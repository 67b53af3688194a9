"""End-to-end demo on the synthetic CLEVR-Change set: stage 1 (adaptation) then stage 2 (captioning)
with a tiny model of the real architecture; writes metrics.json, report.md and PNGs.

    python -m clip4idc.demo --data_dir runs/synthetic/clip4idc --out runs/demo/clip4idc
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path


from common.checkpoint import atomic_write_json, atomic_write_text
from common.errors import InputError, run_cli
from common.plot_metrics import plot_runs
from common.threads import apply_num_threads
from clip4idc.data.clevr import ClevrChange
from clip4idc.evaluation import change_accuracy, score_captions
from clip4idc.params import build_parser, check_args
from clip4idc.synthetic import GENERATOR_VERSION, VERSION_FILE, caption_type, write_all
from clip4idc.sysmem import keep_freed_memory
from clip4idc.train import run

TINY = ["--pretrained_clip_name", "tiny", "--random_clip_weights", "--decoder_model", "decoder-tiny",
        "--intra_num_hidden_layers", "2",
        "--max_words", "10", "--freeze_layer_num", "-1", "--num_thread_reader", "0", "--datatype", "clevr",
        "--coef_lr", "1", "--batch_size_val", "128"]


def stage_args(task: str, data: Path, out: Path, extra: list[str], metrics: str = "Bleu,ROUGE_L,CIDEr"):
    """Parsed flags of one stage's script for the demo run."""
    argv = ["--do_train", "--data_path", str(data / "clevr"), "--output_dir", str(out)] + TINY + extra
    if task == "caption":
        argv += ["--gt_dir", str(data / "gt"), "--caption_metrics", metrics, "--n_visualize", "8"]
    return check_args(build_parser(task).parse_args(argv), task)


def type_table(data: ClevrChange, ids: list[str]) -> dict[str, str]:
    """{result image id: true change type}, distractor ids (`_n`) -> 'none'."""
    mapping = data.type_mapping()
    out = {}
    for sid in ids:
        kind = next((k for k, v in mapping.items() if f"{sid}.png" in v), "unknown")
        out[f"{sid}.png"] = kind
        out[f"{sid}.png_n"] = "none"
    return out


def main(argv=None) -> int:
    """Run the demo; returns 0."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default="runs/synthetic/clip4idc", help="synthetic data (generated when missing)")
    p.add_argument("--out", default="runs/demo/clip4idc", help="report directory (replaced)")
    p.add_argument("--retrieval_epochs", type=int, default=7, help="stage-1 epochs")
    p.add_argument("--caption_epochs", type=int, default=4, help="stage-2 epochs")
    p.add_argument("--batch_size", type=int, default=16, help="stage-1 batch size")
    p.add_argument("--lr", type=float, default=1e-3, help="stage-1 learning rate (coef_lr 1)")
    p.add_argument("--caption_batch_size", type=int, default=8, help="stage-2 batch size")
    p.add_argument("--caption_lr", type=float, default=1e-3, help="stage-2 learning rate of the new (decoder) params")
    p.add_argument("--caption_coef_lr", type=float, default=0.01, help="stage-2 CLIP learning rate = caption_lr x this")
    p.add_argument("--seed", type=int, default=0, help="seed")
    p.add_argument("--caption_metrics", default="Bleu,ROUGE_L,CIDEr", help="coco-caption metrics of stage 2")
    p.add_argument("--num_threads", type=int, default=1,
                   help="CPU threads (default 1, unlike the training scripts: the tiny model gains little from "
                        "threads, a shared CPU loses a lot to them, and one thread keeps the figures identical "
                        "from machine to machine)")
    a = p.parse_args(argv)
    if a.num_threads < 1:
        raise InputError("--num_threads", f"must be >= 1, got {a.num_threads}")
    apply_num_threads(a.num_threads)
    keep_freed_memory()  # the caption stage's vocabulary-sized tensors would page-fault on every step
    t0 = time.time()
    data, out = Path(a.data_dir), Path(a.out)
    marker = data / VERSION_FILE
    if (data / "clevr" / "splits.json").is_file() and \
            (not marker.is_file() or marker.read_text().strip() != GENERATOR_VERSION):
        print(f"{data} was written by an older synthetic generator; regenerating it")
        shutil.rmtree(data)
    if not (data / "clevr" / "splits.json").is_file():
        write_all(data)
    if out.exists():
        print(f"replacing the previous demo report in {out}")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    common = ["--seed", str(a.seed), "--n_display", "50", "--num_threads", str(a.num_threads)]
    r = run(stage_args("retrieval", data, out / "retrieval", common + [
        "--epochs", str(a.retrieval_epochs), "--batch_size", str(a.batch_size), "--lr", str(a.lr)]), "retrieval")
    ret = r["last"]
    init = out / "retrieval" / f"pytorch_model.bin.{a.retrieval_epochs - 1}"
    c = run(stage_args("caption", data, out / "caption", common + [
        "--epochs", str(a.caption_epochs), "--batch_size", str(a.caption_batch_size), "--lr", str(a.caption_lr),
        "--coef_lr", str(a.caption_coef_lr), "--init_model", str(init)], a.caption_metrics), "caption")
    last = a.caption_epochs - 1
    hyps = {h["image_id"]: h["caption"] for h in json.loads((out / "caption" / f"hyp_ep_{last}.json").read_text())}
    clevr = ClevrChange(data / "clevr")
    test_ids = clevr.scene_ids("test")
    truth = type_table(clevr, test_ids)
    acc = change_accuracy(hyps, truth, caption_type)
    confusion = Counter((truth[i], caption_type(cap)) for i, cap in hyps.items() if i in truth)
    gt = json.loads((data / "gt" / "clevr_total_change_captions_reformat.json").read_text())
    train_caps = Counter()
    for sid in clevr.scene_ids("train"):
        train_caps.update(clevr.change[f"CLEVR_default_{sid}.png"])
        train_caps.update(clevr.no_change[f"CLEVR_default_{sid}.png"][:1])
    majority_caption = train_caps.most_common(1)[0][0]
    majority = score_captions({i: majority_caption for i in hyps}, gt, ["CIDEr"]) if "CIDEr" in c["last"] else {}
    n_pairs = len(test_ids)
    results = [
        {"name": "pair_to_text_R@1", "value": ret["V2T$R1"], "baseline": 100.0 / n_pairs, "baseline_kind": "chance"},
        {"name": "text_to_pair_R@1", "value": ret["R1"], "baseline": 100.0 / n_pairs, "baseline_kind": "chance"},
        {"name": "change_vs_no_change_accuracy", "value": acc["change_acc"], "baseline": acc["change_acc_majority"],
         "baseline_kind": "majority"},
        {"name": "change_type_accuracy", "value": acc["type_acc"], "baseline": acc["type_acc_majority"],
         "baseline_kind": "majority"},
            ]
    if majority:
        results.append({"name": "CIDEr", "value": c["last"]["CIDEr"], "baseline": majority["CIDEr"],
                        "baseline_kind": "majority"})
    seconds = time.time() - t0
    atomic_write_json(out / "metrics.json", {"results": results, "seconds": round(seconds, 1)})
    pngs = sorted((out / "caption" / f"vis_ep_{last}").glob("*.png"))
    if not pngs:
        raise InputError(out, "no PNG was written")
    shutil.copy(out / "caption" / f"vis_ep_{last}" / "overview.png", out / "overview.png")
    plot_runs([out / "retrieval", out / "caption"], out / "curves.png")  # both stages' metrics.jsonl
    for png in pngs[:4]:
        shutil.copy(png, out / f"pair_{png.name}")
    scores = json.loads((out / "caption" / f"scores_ep_{last}.json").read_text())
    lines = ["# CLIP4IDC demo (synthetic CLEVR-Change, tiny model of the real architecture)", "",
             f"Wall time {seconds:.0f} s. Stage 1: {a.retrieval_epochs} epochs of symmetric InfoNCE; stage 2: "
             f"{a.caption_epochs} epochs of caption cross-entropy initialised from stage 1 (`--init_model`), decoder LR "
             f"{a.caption_lr:g}, CLIP LR {a.caption_lr * a.caption_coef_lr:g} (`--coef_lr {a.caption_coef_lr:g}`: the "
             "stage-1 pair encoder is kept nearly fixed while the new decoder learns to read it).", "",
             "| metric | value | baseline | kind |", "|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['value']:.4f} | {r['baseline']:.4f} | {r['baseline_kind']} |" for r in results]
    lines += ["", f"Majority caption baseline: \"{majority_caption}\" for every pair.", "",
              "## Per change type (RCC-style breakdown)", "", "| subset | Bleu_4 | ROUGE_L | CIDEr |", "|---|---|---|---|"]
    for name, s in scores.items():
        if s:
            lines.append(f"| {name} | {s.get('Bleu_4', 0):.4f} | {s.get('ROUGE_L', 0):.4f} | {s.get('CIDEr', 0):.4f} |")
    kinds = ["color", "material", "add", "drop", "move", "none"]
    lines += ["", "## Change type named by the generated captions (rows: true type, columns: named type)", "",
              "| true \\ named | " + " | ".join(kinds + ["unknown"]) + " | accuracy |",
              "|---" * (len(kinds) + 3) + "|"]
    for k in kinds:
        row = [confusion[(k, n)] for n in kinds + ["unknown"]]
        lines.append(f"| {k} | " + " | ".join(map(str, row)) + f" | {confusion[(k, k)] / max(sum(row), 1):.2f} |")
    lines += ["", "## Training curves", "", "![curves](curves.png)", ""]
    lines += ["", "## Examples", "", "![overview](overview.png)", ""]
    lines += [f"![{p.name}](pair_{p.name})" for p in pngs[:4]]
    lines += ["", "Sample captions:", ""]
    lines += [f"- `{i}`: {hyps[i]}" for i in list(hyps)[:5] + [k for k in hyps if k.endswith('_n')][:3]]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    print(json.dumps({"results": results, "seconds": round(seconds, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_cli(main)
