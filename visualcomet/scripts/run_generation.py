"""Sample intent/before/after inferences for the val or test split (original flags of scripts/run_generation.py).

    python scripts/run_generation.py --data_dir <ann>/ --model_name_or_path experiments/image_inference/ --split val

Writes ``{output_file or model_dir/}{split}_sample_{do_sample}_num_{num_samples}_top_k_{top_k}_top_p_{top_p}.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from common.errors import InputError, run_cli
from common.safe_pickle import add_trust_flag
from common.threads import add_num_threads_flag, apply_num_threads

UNUSED = "accepted for compatibility; the original never read it"


def build_parser() -> argparse.ArgumentParser:
    """Flags of the original run_generation.py plus data-path and determinism options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_type", default="gpt2_vc", help="model family; only gpt2_vc exists")
    p.add_argument("--model_name_or_path", default="gpt2", help="trained model directory (e.g. the released "
                   "image-inference-80000-ckpt, or an --output_dir / checkpoint-N of run_finetuning.py)")
    p.add_argument("--data_dir", required=True, help="directory with {train,val,test}_annots.json")
    p.add_argument("--vcr_images_dir", default=None, help="VCR metadata root (default $VCR_IMAGES_DIR or "
                                                          "<data_dir>/vcr1images)")
    p.add_argument("--vcr_features_dir", default=None, help="feature pickles (default $VCR_FEATURES_DIR or "
                                                            "<data_dir>/features)")
    p.add_argument("--split", required=True, choices=["val", "test"], help="which annotations to generate for")
    p.add_argument("--task", default=None, help=UNUSED)
    p.add_argument("--prompt", default="", help="refused when set: prompts come from the annotations")
    p.add_argument("--padding_text", default="", help="refused when set: not used by VisualCOMET")
    p.add_argument("--output_file", default=None, help="output path prefix (default: <model_name_or_path>/)")
    p.add_argument("--overwrite_output", action="store_true", help="replace an existing output file")
    p.add_argument("--max_seq_len", type=int, default=128, help="keep the training value (cache key, layout)")
    p.add_argument("--no_image", action="store_true", help="no visual tensors")
    p.add_argument("--no_text", action="store_true", help="blank the event and place tokens")
    p.add_argument("--use_all_dets", action="store_true", help="use all VCR detections as visual tokens")
    p.add_argument("--length", type=int, default=20, help="sampled tokens (last forced to <|e_in|>); <0: n_positions")
    p.add_argument("--temperature", type=float, default=1.0, help="logit temperature")
    p.add_argument("--top_k", type=int, default=0, help="top-k filter (0: off)")
    p.add_argument("--top_p", type=float, default=0.9, help="nucleus threshold")
    p.add_argument("--inference_type", default="all", choices=["all", "intent", "before", "after"],
                   help="relations to generate (the original always generated all three)")
    p.add_argument("--do_sample", type=int, default=1, choices=[0, 1], help="1: sampling; 0: beam search "
                                                                           "(num_beams = --num_samples)")
    p.add_argument("--beam_search", default="original", choices=["original", "clean"],
                   help="with --do_sample 0: 'original' reproduces the original's beam search (the last step adds "
                        "each beam without its last word, duplicates kept, insertion order); 'clean' keeps every "
                        "word, drops duplicates, stops early and sorts best first (see generation.py)")
    p.add_argument("--num_samples", type=int, default=5, help="samples (or returned beams) per prompt")
    p.add_argument("--gen_batch_size", type=int, default=1,
                   help="prompts per forward pass (sampling, and beam search: batch x beams rows)")
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"],
                   help="autocast precision: bf16 (CPU or CUDA) or fp16 (CUDA); none = fp32 as the original")
    p.add_argument("--attn_implementation", default="sdpa", choices=["sdpa", "eager"],
                   help="GPT-2 attention: torch's fused scaled_dot_product_attention (default) or the original's eager")
    p.add_argument("--shared_seed_stream", action="store_true",
                   help="one random stream for all prompts instead of re-seeding per prompt (pitfall 8)")
    p.add_argument("--no_cuda", action="store_true", help="run on CPU")
    p.add_argument("--seed", type=int, default=42, help="random seed (re-applied per prompt by default)")
    p.add_argument("--overwrite_cache", action="store_true", help="rebuild the prompt cache")
    p.add_argument("--cache_postfix", default=None, help="appended to the cache file name")
    p.add_argument("--allow_partial_checkpoint", action="store_true",
                   help="load a checkpoint that lacks some keys (logged; they keep a fresh initialisation), as the "
                        "original's non-strict from_pretrained did; without it a missing key is an error")
    add_trust_flag(p)
    add_num_threads_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Generate and write the JSON list."""
    args = build_parser().parse_args(argv)
    apply_num_threads(args.num_threads)
    if args.model_type != "gpt2_vc":
        raise InputError("--model_type", f"only gpt2_vc exists, got {args.model_type!r}")
    if args.prompt or args.padding_text:
        raise InputError("--prompt", "free-text prompts are not supported; prompts come from the annotations")
    if args.gen_batch_size < 1 or args.num_samples < 1:
        raise InputError("--gen_batch_size", "--gen_batch_size and --num_samples must be >= 1")
    import torch

    from common.checkpoint import atomic_write_json
    from visualcomet import data as vdata
    from visualcomet.generation import amp_context, generate_split
    from visualcomet.model import load_pretrained
    from visualcomet.tokenization import VisualCometTokenizer

    prefix = args.output_file if args.output_file is not None else args.model_name_or_path.rstrip("/") + "/"
    out = Path(f"{prefix}{args.split}_sample_{args.do_sample}_num_{args.num_samples}_top_k_{args.top_k}"
               f"_top_p_{args.top_p}.json")
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
    relations = ("intent", "before", "after") if args.inference_type == "all" else (args.inference_type,)
    with precision:
        outputs = generate_split(model, tokenizer, paths, args.split, args.max_seq_len, not args.no_image,
                                 not args.no_text, args.use_all_dets, relations, args.length, args.temperature,
                                 args.top_k, args.top_p, bool(args.do_sample), args.num_samples,
                                 args.gen_batch_size, args.seed, args.shared_seed_stream, device, None,
                                 args.cache_postfix, args.overwrite_cache, args.beam_search)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, outputs)
    for o in outputs[:30]:
        print(json.dumps({k: o[k] for k in ("event", "place", "inference_relation", "generations")}))
    print(f"wrote {len(outputs)} records to {out}")
    return 0


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
