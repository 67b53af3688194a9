"""BLEU / METEOR / CIDEr (+ Unique / Novel) of generated inferences (original scripts/evaluate_generation.py).

    python scripts/evaluate_generation.py --gens_file <gens>.json --refs_file <ann>/val_annots.json \\
        [--diversity --train_file <ann>/train_annots.json]

Writes ``<gens_file minus .json>.evaluate.json`` (fractions, not x100).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common.errors import InputError, run_cli
from common.experiment_log import add_report_to_flag
from common.threads import add_num_threads_flag, apply_num_threads


def build_parser() -> argparse.ArgumentParser:
    """Flags of the original evaluate_generation.py."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--refs_file", required=True, help="the annotation list the generations were made from")
    p.add_argument("--gens_file", required=True, help="output JSON of run_generation.py")
    p.add_argument("--mode", default="inference", choices=["inference"], help="only inference generations exist")
    p.add_argument("--diversity", action="store_true", help="also compute Unique and Novel (needs --train_file)")
    p.add_argument("--train_file", default=None, help="train_annots.json (for Novel)")
    p.add_argument("--normalized_novel", action="store_true",
                   help="also report Novel_normalized: training sentences PTB-tokenised like the predictions "
                        "(the original compared against raw sentences, pitfall 26)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing .evaluate.json")
    add_num_threads_flag(p)
    add_report_to_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Score the generations and write the .evaluate.json next to them."""
    args = build_parser().parse_args(argv)
    apply_num_threads(args.num_threads)
    if args.diversity and not args.train_file:
        raise InputError("--diversity", "needs --train_file train_annots.json")
    from common.checkpoint import atomic_write_json
    from visualcomet.evaluation import evaluate_generations, log_results

    out = Path(args.gens_file.replace(".json", ".evaluate.json") if args.gens_file.endswith(".json")
               else args.gens_file + ".evaluate.json")
    if out.exists() and not args.overwrite:
        raise InputError(out, "exists; pass --overwrite to replace it")
    if args.normalized_novel and not args.diversity:
        raise InputError("--normalized_novel", "needs --diversity")
    result = evaluate_generations(args.gens_file, args.refs_file, args.diversity, args.train_file,
                                  normalized_novel=args.normalized_novel)
    for k, v in result.items():
        print(f"{k}: {v:.4f}")
    atomic_write_json(out, result)
    log_results(out.parent, result, args.report_to)  # metrics.jsonl of the directory holding the generations
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
