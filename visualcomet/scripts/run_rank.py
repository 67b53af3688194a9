"""Retrieval accuracy (Acc@N) of a trained model (original scripts/run_rank.py, spec 2.5 and 5.4).

    python scripts/run_rank.py --data_dir <ann>/ --model_name_or_path experiments/image_inference/ --split val

Writes ``{output_file or model_dir/}{split}_rank_{rank_mode}.json`` = {"mean_recall": ..., "results": [...]}.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common.errors import InputError, run_cli
from common.experiment_log import add_report_to_flag
from common.safe_pickle import add_trust_flag
from common.threads import add_num_threads_flag, apply_num_threads

UNUSED = "accepted for compatibility; the original never read it"


def build_parser() -> argparse.ArgumentParser:
    """Flags of the original run_rank.py plus seeded / file-given candidates."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_type", default="gpt2_vc", help="model family; only gpt2_vc exists")
    p.add_argument("--model_name_or_path", default="gpt2", help="trained model directory")
    p.add_argument("--data_dir", required=True, help="directory with {train,val,test}_annots.json")
    p.add_argument("--vcr_images_dir", default=None, help="VCR metadata root (default $VCR_IMAGES_DIR or "
                                                          "<data_dir>/vcr1images)")
    p.add_argument("--vcr_features_dir", default=None, help="feature pickles (default $VCR_FEATURES_DIR or "
                                                            "<data_dir>/features)")
    p.add_argument("--split", required=True, choices=["val"], help="only val has inferences to rank")
    p.add_argument("--task", default=None, help=UNUSED)
    p.add_argument("--prompt", default="", help="refused when set: not used by ranking")
    p.add_argument("--padding_text", default="", help="refused when set: not used by ranking")
    p.add_argument("--output_file", default=None, help="output path prefix (default: <model_name_or_path>/)")
    p.add_argument("--overwrite_output", action="store_true", help="replace an existing output file")
    p.add_argument("--rank_mode", default="random_50", help="random_N | movie_N | inference_N")
    p.add_argument("--candidates_file", default=None, help="reuse the candidates of a previous output, e.g. the "
                                                           "released val_rank_random_50.json")
    p.add_argument("--exact_denominator", action="store_true",
                   help="divide the summed loss by #labelled tokens (the original used #labelled + 1, pitfall 11)")
    p.add_argument("--no_image", action="store_true", help="no visual tensors")
    p.add_argument("--no_text", action="store_true", help="blank the event and place tokens")
    p.add_argument("--use_all_dets", action="store_true", help="use all VCR detections as visual tokens")
    p.add_argument("--max_seq_len", type=int, default=128, help="keep the training value")
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"],
                   help="autocast precision: bf16 (CPU or CUDA) or fp16 (CUDA); none = fp32 as the original")
    p.add_argument("--attn_implementation", default="sdpa", choices=["sdpa", "eager"],
                   help="GPT-2 attention: torch's fused scaled_dot_product_attention (default) or the original's eager")
    p.add_argument("--no_cuda", action="store_true", help="run on CPU")
    p.add_argument("--seed", type=int, default=42, help="seed of the negative sampling (the original never seeded it)")
    p.add_argument("--overwrite_cache", action="store_true", help="rebuild the dataset cache")
    p.add_argument("--cache_postfix", default=None, help="appended to the cache file name")
    p.add_argument("--allow_partial_checkpoint", action="store_true",
                   help="load a checkpoint that lacks some keys (logged; they keep a fresh initialisation), as the "
                        "original's non-strict from_pretrained did; without it a missing key is an error")
    add_trust_flag(p)
    add_num_threads_flag(p)
    add_report_to_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Rank and write the result JSON."""
    args = build_parser().parse_args(argv)
    apply_num_threads(args.num_threads)
    if args.model_type != "gpt2_vc":
        raise InputError("--model_type", f"only gpt2_vc exists, got {args.model_type!r}")
    if args.prompt or args.padding_text:
        raise InputError("--prompt", "free-text prompts are not used by ranking")
    import torch

    from common.checkpoint import atomic_write_json
    from visualcomet import data as vdata
    from visualcomet import ranking
    from visualcomet.evaluation import log_results
    from visualcomet.generation import amp_context, layout_from_config
    from visualcomet.model import load_pretrained
    from visualcomet.tokenization import VisualCometTokenizer

    ranking.parse_rank_mode(args.rank_mode)
    prefix = args.output_file if args.output_file is not None else args.model_name_or_path.rstrip("/") + "/"
    out = Path(f"{prefix}{args.split}_rank_{args.rank_mode}.json")
    if out.exists() and not args.overwrite_output:
        raise InputError(out, "output exists; pass --overwrite_output to replace it")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
    precision = amp_context(args.amp, device)
    tokenizer = VisualCometTokenizer.from_pretrained(args.model_name_or_path)
    model, _ = load_pretrained(args.model_name_or_path, trust=args.trust_checkpoint, require_weights=True,
                               partial=args.allow_partial_checkpoint)
    model.to(device)
    model.set_attn_implementation(args.attn_implementation)
    paths = vdata.DataPaths.resolve(args.data_dir, args.vcr_images_dir, args.vcr_features_dir, args.trust_checkpoint)
    layout = layout_from_config(model.config, args.max_seq_len)
    layout, splits = vdata.build_finetune_data(paths, tokenizer, args.max_seq_len, "inference", not args.no_text,
                                               None, args.cache_postfix, args.overwrite_cache, splits=("val",),
                                               layout=layout)
    examples, labels, records = splits["val"]
    ds = vdata.VCGDataset(records, examples, labels, tokenizer, paths, not args.no_image, args.use_all_dets,
                          model.feature_dim)
    queries = (ranking.load_candidates(args.candidates_file, records) if args.candidates_file
               else ranking.build_candidates(records, args.rank_mode, args.seed))
    with precision:
        result = ranking.rank(model, ds, layout, queries, device, args.seed, args.exact_denominator)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    log_results(out.parent, {f"rank_{args.rank_mode}_mean_recall": result["mean_recall"]}, args.report_to)
    print(f"mean recall: {result['mean_recall']}")
    return 0


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
