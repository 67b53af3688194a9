"""Fine-tune GPT-2 + image features on VisualCOMET (original flags of scripts/run_finetuning.py, spec 2.2).

    python scripts/run_finetuning.py --data_dir <ann>/ --output_dir experiments/image_inference --max_seq_len 128 \\
        --per_gpu_train_batch_size 64 --overwrite_output_dir --num_train_epochs 5 --save_steps 10000 --learning_rate 5e-5
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from common.errors import InputError, run_cli
from common.experiment_log import add_report_to_flag
from common.safe_pickle import add_trust_flag
from common.threads import add_num_threads_flag, apply_num_threads

UNUSED = "accepted for compatibility; the original never read it"


def str2bool(value: str) -> bool:
    """Proper boolean parsing (the original's type=bool made 'False' true, pitfall 15)."""
    if value.lower() in ("1", "true", "yes", "y"):
        return True
    if value.lower() in ("0", "false", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    """All flags of the original run_finetuning.py plus path options replacing config.py."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_type", default="gpt2_vc", help="model family; only gpt2_vc exists")
    p.add_argument("--model_name_or_path", default="gpt2",
                   help="local directory with config.json, vocab.json, merges.txt (+ pytorch_model.bin): a GPT-2 "
                        "checkpoint, the released image-inference-80000-ckpt, or a checkpoint-N/ of this script")
    p.add_argument("--data_dir", required=True, help="directory with {train,val,test}_annots.json (no trailing / needed)")
    p.add_argument("--output_dir", required=True, help="checkpoints, final model and training log")
    p.add_argument("--eval_output_dir", default=None, help="where metrics.json goes (default: --output_dir)")
    p.add_argument("--tb_dir", default=None, help="where the per-step log train_log.jsonl goes (default: "
                                                  "--output_dir); the common metrics.jsonl (and --report_to "
                                                  "tensorboard event files) go to --output_dir")
    p.add_argument("--vcr_images_dir", default=None, help="VCR vcr1images/ root holding the metadata JSONs "
                   "(default: $VCR_IMAGES_DIR, else <data_dir>/vcr1images)")
    p.add_argument("--vcr_features_dir", default=None, help="directory of <image_id>.pkl feature pickles "
                   "(default: $VCR_FEATURES_DIR, else <data_dir>/features)")
    p.add_argument("--task", default="visual_comet", help=UNUSED)
    p.add_argument("--use_all_dets", action="store_true", help="use all VCR detections, not only mentioned people")
    p.add_argument("--use_obj_loss", action="store_true",
                   help="refused: the original's object loss was never implemented (it added None, pitfall 14)")
    p.add_argument("--use_bbox", action="store_true", help="add a box-coordinate embedding to the visual vectors")
    p.add_argument("--mode", default="inference", choices=["inference", "all"],
                   help="'all' also puts the LM loss on event and place tokens (EP loss)")
    p.add_argument("--no_image", action="store_true", help="no visual tensors (text-only model)")
    p.add_argument("--no_text", action="store_true", help="blank the event and place tokens with <|endoftext|>")
    p.add_argument("--no_person_ids", action="store_true", help="do not add <|detN|> embeddings to visual vectors")
    p.add_argument("--no_subject_ids", action="store_true", help="no subject embedding")
    p.add_argument("--mlm", action="store_true", help="refused: masked-LM training was an unused leftover")
    p.add_argument("--mlm_probability", type=float, default=0.15, help=UNUSED + " (only with --mlm)")
    p.add_argument("--config_name", default="", help="directory of an alternative config.json")
    p.add_argument("--tokenizer_name", default="", help="directory of an alternative tokenizer")
    p.add_argument("--cache_dir", default=None, help="directory for the dataset cache (created if missing)")
    p.add_argument("--max_seq_len", type=int, default=-1, help="total token length (<=0: 1024); use 128")
    p.add_argument("--do_train", type=str2bool, default=True, help="train (true/false)")
    p.add_argument("--do_eval", type=str2bool, default=True, help="evaluate the final model (true/false)")
    p.add_argument("--evaluate_during_training", action="store_true",
                   help="validation runs at every --save_steps anyway (as in the original)")
    p.add_argument("--do_lower_case", action="store_true", help="lower-case text (not special tokens)")
    p.add_argument("--per_gpu_train_batch_size", type=int, default=64, help="batch size per process")
    p.add_argument("--per_gpu_eval_batch_size", type=int, default=64, help="eval batch size per process")
    p.add_argument("--gradient_accumulation_steps", type=int, default=1, help="batches per optimizer step")
    p.add_argument("--learning_rate", type=float, default=5e-5, help="AdamW peak learning rate")
    p.add_argument("--weight_decay", type=float, default=0.0, help="AdamW weight decay (biases exempt)")
    p.add_argument("--adam_epsilon", type=float, default=1e-8, help="AdamW epsilon")
    p.add_argument("--adamw", default="original", choices=["original", "torch"],
                   help="'original': transformers 2.4.1's AdamW update as the original trained with (eps added to "
                        "sqrt(v) before bias correction, weight decay after the step; visualcomet/optim.py); "
                        "'torch': torch.optim.AdamW")
    p.add_argument("--max_grad_norm", type=float, default=1.0, help="global gradient-norm clip")
    p.add_argument("--num_train_epochs", type=float, default=5.0, help="epochs (int()-ed)")
    p.add_argument("--max_steps", type=int, default=-1, help=">0: exactly this many optimizer steps (overrides epochs;"
                                                             " the original ran one extra, pitfall 16)")
    p.add_argument("--warmup_steps", type=int, default=0, help="linear warmup steps, then linear decay to 0")
    p.add_argument("--logging_steps", type=int, default=500, help="log mean train loss and lr every N steps")
    p.add_argument("--save_steps", type=int, default=10000, help="save checkpoint-N/ and validate every N steps (0: off)")
    p.add_argument("--eval_all_checkpoints", action="store_true", help="after training evaluate every checkpoint-N/")
    p.add_argument("--eval_all_batches", action="store_true",
                   help="validation over every batch, token-weighted (the original dropped the last partial batch)")
    p.add_argument("--keep_unused_visual_slots", action="store_true",
                   help="keep wte[<eot>] in image slots beyond an example's boxes instead of the original's zeros")
    p.add_argument("--no_cuda", action="store_true", help="run on CPU")
    p.add_argument("--overwrite_output_dir", action="store_true", help="allow a non-empty --output_dir")
    p.add_argument("--overwrite_cache", action="store_true", help="rebuild the tokenised dataset cache")
    p.add_argument("--cache_postfix", default=None, help="appended to the cache file name")
    p.add_argument("--seed", type=int, default=42, help="random seed")
    p.add_argument("--fp16", action="store_true", help="float16 autocast + grad scaling on CUDA")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA or CPU); off = fp32 as the original")
    p.add_argument("--attn_implementation", default="auto", choices=["auto", "sdpa", "eager"],
                   help="GPT-2 attention: 'sdpa' (torch's fused scaled_dot_product_attention) or 'eager' (the "
                        "matmul-softmax-matmul of the original; same results within float rounding); 'auto' "
                        "(default) = sdpa on CUDA, eager on CPU, where sdpa measured slower for training")
    p.add_argument("--compile", action="store_true", help="torch.compile the model for training (off by default; the "
                                                          "first steps are slow while it compiles)")
    p.add_argument("--compile_backend", default="inductor",
                   help="torch.compile backend with --compile (inductor; aot_eager/eager for debugging)")
    p.add_argument("--adamw_loop", action="store_true",
                   help="with --adamw original: update parameter by parameter like 2.4.1 (the default on CPU, "
                        "where it measured faster) instead of the multi-tensor foreach version (bit-identical)")
    p.add_argument("--adamw_foreach", action="store_true",
                   help="with --adamw original: multi-tensor (foreach) updates on CPU too (the default on CUDA)")
    p.add_argument("--fp16_opt_level", default="O1", help="apex level; only O1 (= torch autocast) is supported")
    p.add_argument("--local_rank", type=int, default=-1, help="ignored: launch with torchrun, which sets LOCAL_RANK")
    p.add_argument("--server_ip", default="", help="refused when set: ptvsd remote debugging was removed")
    p.add_argument("--server_port", default="", help="refused when set: ptvsd remote debugging was removed")
    p.add_argument("--resume", action="store_true", help="continue from <output_dir>/resume (weights, optimizer, "
                                                         "scheduler, RNG, data position)")
    p.add_argument("--allow_partial_checkpoint", action="store_true",
                   help="load a checkpoint that lacks some keys (logged; they keep a fresh initialisation), as the "
                        "original's non-strict from_pretrained did; without it a missing key is an error")
    add_trust_flag(p)
    add_num_threads_flag(p)
    add_report_to_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags, refuse the unsupported ones, train."""
    args = build_parser().parse_args(argv)
    apply_num_threads(args.num_threads)
    if args.model_type != "gpt2_vc":
        raise InputError("--model_type", f"only gpt2_vc exists, got {args.model_type!r}")
    if args.use_obj_loss:
        raise InputError("--use_obj_loss", "the object-classification loss does not exist in the original (it crashed "
                                           "adding None); drop the flag")
    if args.mlm:
        raise InputError("--mlm", "masked-LM training is not part of VisualCOMET")
    if args.server_ip or args.server_port:
        raise InputError("--server_ip", "ptvsd remote debugging is not supported")
    if args.fp16_opt_level != "O1":
        raise InputError("--fp16_opt_level", "only O1 (mixed precision via torch autocast) is supported")
    if args.mode == "all" and args.no_text:
        raise InputError("--no_text", "--mode all trains on event and place tokens; it cannot be combined with "
                                      "--no_text (the original crashed, pitfall 20)")
    if not args.do_train:
        raise InputError("--do_train", "this script trains; evaluate a model with --do_train false by pointing "
                                       "run_rank.py / run_generation.py at it")
    from visualcomet.training import log, train

    defaults = build_parser().parse_args(["--data_dir", "-", "--output_dir", "-"])
    for flag in ("task", "local_rank", "evaluate_during_training", "mlm_probability"):
        if getattr(args, flag) != getattr(defaults, flag):
            log.warning("--%s has no effect (as in the original): %s", flag,
                        next(a.help for a in build_parser()._actions if a.dest == flag))
    result = train(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
