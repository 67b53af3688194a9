"""Command-line flags of main_task_retrieval.py / main_task_caption.py (spec 2.2, original names and
defaults) plus the additions of this reimplementation (marked [new])."""
from __future__ import annotations

import argparse

from common.errors import InputError
from common.experiment_log import add_report_to_flag
from common.safe_pickle import add_trust_flag
from common.threads import add_num_threads_flag

# Flags the original parses but never reads: accepted at their default, refused otherwise.
UNUSED = {
    "do_pretrain": False, "lr_decay": 0.9, "margin": 0.1, "hard_negative_rate": 0.5, "negative_weighting": 1,
    "n_pair": 1, "do_lower_case": False, "fp16_opt_level": "O1", "use_mil": False, "sampled_use_mil": False,
    "text_num_hidden_layers": 12, "visual_num_hidden_layers": 12, "cross_num_hidden_layers": 2,
    "feature_framerate": 1, "cache_dir": "",
}
# Overwritten from the launcher in the original; here too (logged).
FROM_LAUNCHER = ("world_size", "rank", "n_gpu", "local_rank")


def build_parser(task: str) -> argparse.ArgumentParser:
    """argparse parser of the `task` ('retrieval' or 'caption') script."""
    p = argparse.ArgumentParser(
        description=f"CLIP4IDC {'IDC adaptation (pair-text retrieval)' if task == 'retrieval' else 'IDC fine-tuning (captioning)'}."
        " Launch with torchrun --nproc_per_node=N for several processes, or plainly for one (CPU or GPU).")
    a = p.add_argument
    a("--do_pretrain", action="store_true", help="unused by the original; refused if set")
    a("--do_train", action="store_true", help="train, evaluating on the test split after every epoch")
    a("--do_eval", action="store_true", help="evaluate only (rank 0)")
    a("--data_path", type=str, default="data/datatype",
      help="dataset root: CLEVR dir with images/ sc_images/ nsc_images/ splits.json ...; Spot/IER dir with the JSON files")
    a("--features_path", type=str, default="data/datatype/images", help="Spot/IER image directory (CLEVR ignores it)")
    a("--num_thread_reader", type=int, default=1, help="DataLoader workers")
    a("--lr", type=float, default=0.0001, help="base learning rate (non-CLIP parameter groups)")
    a("--epochs", type=int, default=20, help="training epochs")
    a("--batch_size", type=int, default=256, help="GLOBAL train batch (split over processes; spec 9.6 fix)")
    a("--batch_size_val", type=int, default=3500, help="evaluation batch")
    a("--lr_decay", type=float, default=0.9, help="unused by the original; refused if changed")
    a("--n_display", type=int, default=100, help="log every n optimizer steps")
    a("--seed", type=int, default=42, help="random seed (python, numpy, torch)")
    a("--max_words", type=int, default=20, help="text length incl. special tokens; also the decoding length")
    if task == "retrieval":
        a("--feature_framerate", type=int, default=1, help="unused by the original; refused if changed")
    a("--margin", type=float, default=0.1, help="unused by the original; refused if changed")
    a("--hard_negative_rate", type=float, default=0.5, help="unused by the original; refused if changed")
    a("--negative_weighting", type=int, default=1, help="unused by the original; refused if changed")
    a("--n_pair", type=int, default=1, help="unused by the original; refused if changed")
    a("--output_dir", type=str, required=True, help="log.txt, pytorch_model.bin.{epoch}, hyp files, resume/")
    a("--cross_model", type=str, default="cross-base", help="cross config (only initializer_range is used)")
    a("--decoder_model", type=str, default="decoder-base",
      help="decoder config: name in clip4idc/configs (decoder-base, decoder-tiny), a dir with decoder_config.json, or a JSON file")
    a("--init_model", type=str, default=None,
      help="state dict to initialise from (original or this layout). [changed] Strict: every model tensor must be in "
           "the file, except the caption decoder when stage 2 starts from a stage-1 file (logged); the original "
           "loaded non-strictly")
    a("--init_model_partial", action="store_true",
      help="[new] load an --init_model that lacks model tensors or has extra ones (the original's non-strict load); "
           "the tensors it lacks keep their initialisation and are listed in the log")
    a("--resume_model", type=str, default=None,
      help="resume: a resume/ directory (or step_* checkpoint) written by this code, restoring model, optimizer, "
           "RNG and epoch; or the original's {'epoch','optimizer_state_dict','loss'} file (model from --init_model)")
    a("--do_lower_case", action="store_true", help="unused by the original; refused if set")
    a("--warmup_proportion", type=float, default=0.1, help="warmup fraction of the total optimizer steps")
    a("--gradient_accumulation_steps", type=int, default=1, help="batches per optimizer step (>= 1)")
    a("--n_gpu", type=int, default=1, help="overwritten from the launcher (logged)")
    a("--cache_dir", type=str, default="", help="unused here (no downloads); refused if set")
    a("--fp16", action="store_true", help="[changed] CUDA AMP float16 autocast + GradScaler for training, evaluation and "
      "decoding (unused in the original)")
    a("--fp16_opt_level", type=str, default="O1", help="apex opt level: unused; refused if changed")
    a("--task_type", type=str, default=task, help=f"must be '{task}' for this script")
    a("--datatype", type=str, default="msrvtt", help="clevr, spot or ier ([new] Image Editing Request)")
    a("--world_size", type=int, default=0, help="overwritten from the launcher (logged)")
    a("--local_rank", "--local-rank", type=int, default=0, help="set by the launcher; overwritten from LOCAL_RANK")
    a("--rank", type=int, default=0, help="overwritten from the launcher (logged)")
    a("--coef_lr", type=float, default=1.0, help="LR multiplier for CLIP parameters")
    a("--use_mil", action="store_true", help="unused by the original; refused if set")
    a("--sampled_use_mil", action="store_true", help="unused by the original; refused if set")
    a("--text_num_hidden_layers", type=int, default=12, help="unused by the original; refused if changed")
    a("--visual_num_hidden_layers", type=int, default=12, help="unused by the original; refused if changed")
    a("--intra_num_hidden_layers", type=int, default=9, help="leading ViT blocks run per image before joining the pair")
    a("--cross_num_hidden_layers", type=int, default=2, help="unused by the original; refused if changed")
    a("--freeze_layer_num", type=int, default=0, help="freeze CLIP blocks below this index ([-1, 12]; -1 = none)")
    a("--linear_patch", type=str, default="2d", choices=["2d", "3d"], help="patchify with Conv2d or Conv3d")
    a("--pretrained_clip_name", type=str, default="ViT-B/32",
      help="ViT-B/32 or ViT-B/16 (weights from ./modules/, clip4idc/modules/ or ~/.cache/clip/ ViT-B-32.pt etc.; "
           "missing is an error unless --random_clip_weights), an OpenAI .pt path, or a size config in "
           "clip4idc/configs (tiny; no weights)")
    a("--random_clip_weights", action="store_true",
      help="[new] allow CLIP tensors that neither the OpenAI file nor --init_model provides to start from random "
           "weights (the original downloads ViT-B-32.pt instead; needed for size configs such as tiny)")
    if task == "caption":
        a("--gt_dir", type=str, default="gt", help="dir with {datatype}_total_change_captions_reformat.json "
          "(built from the data when missing)")
        a("--beam_size", type=int, default=1,
          help="[new] beam size for decoding (1 = greedy, the original, whose beam search is hard-coded to 1)")
        a("--length_penalty", type=float, default=0.0,
          help="[new] with --beam_size > 1: pick the beam maximising log-prob / length**alpha over all beams once each "
               "finished (0 = raw summed log-prob and stop when the top beam finished, which favours short captions)")
        a("--caption_metrics", type=str, default="Bleu,METEOR,ROUGE_L,CIDEr",
          help="[new] comma-separated coco-caption metrics to compute (METEOR needs Java)")
        a("--n_visualize", type=int, default=16, help="[new] pairs drawn as side-by-side PNGs (x2 on CLEVR: semantic + distractor) at the last epoch or --do_eval (0 = none)")
        a("--seed_only_clevr", action="store_true",
          help="[new] reproduce the original's unseeded Spot captioning (spec 9.4); default: always seed")
    else:
        a("--retrieval_ties", choices=["strict", "original"], default="strict",
          help="[new] rank ties strictly (default, spec 9.17 fix) or as the original's compute_metrics")
    a("--bf16", action="store_true", help="[new] bfloat16 autocast (CPU or GPU) for training, evaluation and decoding")
    a("--faithful_fp16", action="store_true",
      help="[new] the original's precision: CLIP Linear/Conv weights in float16, updated in place by BertAdam with "
           "float16 moments (spec 5.6 / 9.1; slow on CPU). Default: float32 weights")
    a("--select_on_val", action="store_true",
      help="[new] evaluate and select the best epoch on val instead of test (spec 9.5)")
    a("--per_index_rng", action="store_true",
      help="[new] sample captions/distractors with a per-(seed, epoch, index) RNG, independent of workers (spec 9.24)")
    a("--skip_missing_images", action="store_true",
      help="[new] leave out CLEVR scenes listed in splits.json whose before image is missing, as the original does "
           "silently; counted as skipped_items in the results (default: an error)")
    a("--save_original_precision", action="store_true",
      help="[new] save pytorch_model.bin.{epoch} with the 195 CLIP Conv/Linear/attention tensors in float16 and the "
           "rest in float32, as the original's files (default: the model's dtypes, float32 unless --faithful_fp16)")
    a("--bpe_path", type=str, default=None, help="[new] CLIP BPE vocabulary (default: the copy in this package)")
    a("--device", type=str, default=None, help="[new] cpu or cuda (default: cuda when available)")
    a("--attn_implementation", choices=["sdpa", "eager"], default="sdpa",
      help="[new] attention of the CLIP towers and decoder layers: sdpa (torch's fused kernel, default) or eager "
           "(softmax(QK^T)V as the original computes it); equal up to rounding")
    a("--compile", action="store_true",
      help="[new] torch.compile the pair encoder, text encoder and decoder layers (the first steps compile; "
           "inductor needs a C++ compiler on CPU)")
    add_num_threads_flag(p)
    add_report_to_flag(p)
    add_trust_flag(p)
    return p


def check_args(args: argparse.Namespace, task: str) -> argparse.Namespace:
    """Validate and normalise parsed flags (the original's checks plus refusals of unused flags)."""
    if args.task_type != task:
        raise InputError("--task_type", f"this script runs the {task!r} stage; got {args.task_type!r}"
                         + (" (the original caption_spot.sh called the retrieval script: spec 9.3)" if task == "retrieval" else ""))
    for name, default in UNUSED.items():
        if hasattr(args, name) and getattr(args, name) != default:
            raise InputError(f"--{name}", "has no effect in CLIP4IDC (the original parses but never reads it); "
                             "remove it")
    if not (args.do_train or args.do_eval):
        raise InputError("flags", "at least one of --do_train or --do_eval must be given")
    if args.gradient_accumulation_steps < 1:
        raise InputError("--gradient_accumulation_steps", f"should be >= 1, got {args.gradient_accumulation_steps}")
    if args.datatype not in ("clevr", "spot", "ier"):
        raise InputError("--datatype", f"must be clevr, spot or ier, got {args.datatype!r}")
    if not -1 <= args.freeze_layer_num <= 12:
        raise InputError("--freeze_layer_num", "must lie in [-1, 12]")
    if sum((args.fp16, args.bf16, args.faithful_fp16)) > 1:
        raise InputError("--fp16", "choose one of --fp16, --bf16 and --faithful_fp16")
    if args.num_threads is not None and args.num_threads < 1:
        raise InputError("--num_threads", f"must be >= 1, got {args.num_threads}")
    if args.max_words < 3:
        raise InputError("--max_words", "must be >= 3")
    if getattr(args, "beam_size", 1) < 1:
        raise InputError("--beam_size", "must be >= 1")
    if getattr(args, "length_penalty", 0.0) != 0.0 and getattr(args, "beam_size", 1) == 1:
        raise InputError("--length_penalty", "only applies to beam search: also pass --beam_size > 1")
    return args
