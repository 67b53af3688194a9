"""Command-line options of train.py (spec 2.7) and eval.py (spec 2.8), with the original names and defaults."""
from __future__ import annotations

import argparse
import copy
import math
from typing import Any, Sequence

from common.errors import InputError
from common.experiment_log import add_report_to_flag
from common.safe_pickle import add_trust_flag
from common.threads import add_num_threads_flag
from spatial_captioning.models import CAPTION_MODELS, ORT_MODELS
from spatial_captioning.models.spatial_encoding import POS_TYPES
from spatial_captioning.optim import OPTIMS
from spatial_captioning.speed import add_speed_args


def str2bool(value: str | bool) -> bool:
    """Parse true/1/yes and false/0/no (case-insensitive)."""
    if isinstance(value, bool):
        return value
    low = str(value).strip().lower()
    if low in ("true", "1", "yes", "t", "y"):
        return True
    if low in ("false", "0", "no", "f", "n"):
        return False
    raise argparse.ArgumentTypeError(f"boolean value expected, got {value!r}")


def add_data_args(p: argparse.ArgumentParser, train: bool) -> None:
    """Input files and directories (shared by train and eval)."""
    p.add_argument("--input_json", type=str, default="/data/captioning_data/dataset_coco.json" if train else "",
                   help="cocotalk.json written by scripts/prepro_labels.py (vocab + image list)"
                        + ("" if train else "; empty = the one recorded in the infos file"))
    p.add_argument("--input_fc_feat_dir", "--input_fc_dir", type=str, default="data/cocobu_fc",
                   help="fc features <id>.npy (used by show_tell); --input_fc_dir is ORT's name")
    p.add_argument("--input_img_feat_dir", "--input_att_dir", type=str, default="data/cocobu_att",
                   help="region features <id>.npz (key 'feat'); --input_att_dir is ORT's name")
    p.add_argument("--input_box_dir", type=str, default="data/cocobu_box",
                   help="absolute boxes <id>.npy (read by prepro_areas; the models use grid vectors or relative boxes)")
    p.add_argument("--input_rel_box_dir", type=str, default="/data/cocobu_rel_box" if train else "",
                   help="relative boxes <id>.npy (for --use_box / the ort model / enc_pos_type box-coord)")
    p.add_argument("--input_grid_vec_dir", type=str, default="/data/cocobu_box_vec" if train else "/data/cocobu_box_vec/",
                   help="grid vectors <id>.npy written by prepro_areas.py (for spatial_pe / --use_grid)")
    p.add_argument("--input_label_h5", type=str, default="data/coco_label.h5" if train else "",
                   help="cocotalk_label.h5 written by scripts/prepro_labels.py")
    p.add_argument("--device", type=str, default="cuda", help="cuda or cpu (cuda falls back to cpu when unavailable)")
    p.add_argument("--cache_features", type=int, default=0,
                   help="1 = keep loaded feature files in RAM (small data sets; extension)")
    p.add_argument("--lang_metrics", type=str, nargs="+", default=None,
                   help="metrics of --language_eval (default: Bleu METEOR ROUGE_L CIDEr; SPICE needs its models)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed python/numpy/torch and the data order (default: unseeded, as the original)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Architecture options."""
    p.add_argument("--caption_model", type=str, default="transformer",
                   help="spatial_pe (transformer + grid encoding), transformer/vanilla (no grid), "
                        "ort/relation_transformer (box geometry attention), show_tell (LSTM)")
    p.add_argument("--ff_size", type=int, default=512, help="feed-forward inner size")
    p.add_argument("--ff_activation", type=str, default="RELU", choices=["RELU", "GELU"], help="feed-forward activation")
    p.add_argument("--norm", type=str, default="layer", choices=["layer", "RMS"], help="LayerNorm or RMSNorm")
    p.add_argument("--num_layers", type=int, default=1, help="encoder = decoder layers (RNN layers for show_tell)")
    p.add_argument("--rnn_type", type=str, default="lstm", choices=["lstm", "gru", "rnn"], help="show_tell RNN cell")
    p.add_argument("--hidden_size", type=int, default=512, help="show_tell RNN size")
    p.add_argument("--num_grids", type=int, default=576, help="G = g*g cells of the grid vectors (perfect square)")
    p.add_argument("--input_encoding_size", type=int, default=512, help="d_model / word embedding size")
    p.add_argument("--img_feat_size", "--att_feat_size", type=int, default=2048,
                   help="region feature size; --att_feat_size is ORT's name")
    p.add_argument("--heads", type=int, default=8, help="self-attention heads (and dot-product cross-attention heads)")
    p.add_argument("--dropout", "--drop_prob_lm", type=float, default=0.5,
                   help="probability of EVERY dropout in the model (ort: of att_embed only, its other dropouts are "
                        "0.1 as in ORT); --drop_prob_lm is ORT's name")
    p.add_argument("--use_grid", type=str2bool, default=False, help="feed grid vectors to the encoder (implied by spatial_pe)")
    p.add_argument("--enc_pos_embedding", type=str2bool, default=True,
                   help="learnable spatial encoding (False: sinusoidal, reconstructed; broken in the original)")
    p.add_argument("--enc_pos_type", type=str, default="gxg", choices=list(POS_TYPES), help="spatial encoding type")
    p.add_argument("--use_box", type=str2bool, default=False, help="load relative boxes (ort model)")
    p.add_argument("--cross_attn", type=str, default="xlinear", choices=["xlinear", "dot-product"],
                   help="decoder cross-attention")
    p.add_argument("--use_local_attn", type=str2bool, default=False,
                   help="decoder local attention (code never published: True is refused)")
    p.add_argument("--local_win_size", type=int, default=3, help="local attention window (with --use_local_attn)")
    p.add_argument("--adaptive_dec_self_attn", type=str2bool, default=False,
                   help="adaptive decoder self-attention (code never published: True is refused)")
    p.add_argument("--norm_img_feat", "--norm_att_feat", type=int, default=0,
                   help="1 = L2-normalise each region feature; --norm_att_feat is ORT's name")
    p.add_argument("--norm_box_feat", type=int, default=0, help="1 = L2-normalise each grid-vector / box row")
    p.add_argument("--box_trignometric_embedding", type=str2bool, default=True,
                   help="ort: 64-d sinusoidal geometry embedding (False: raw 4-d)")
    p.add_argument("--legacy_extra_skip", type=str2bool, default=False,
                   help="ort: extra skip connection needed by ORT's released SCST checkpoint")


def add_ort_args(p: argparse.ArgumentParser) -> None:
    """ORT's `opts.py` names that are not plain aliases (resolved by `resolve_ort_flags`)."""
    g = p.add_argument_group("ORT (object_relation_transformer) option names")
    g.add_argument("--rnn_size", type=int, default=None,
                   help="ORT's name: feed-forward size of the transformer models (= --ff_size; ORT's d_ff), "
                        "RNN size of show_tell (= --hidden_size)")
    g.add_argument("--fc_feat_size", type=int, default=None,
                   help="ORT's name: show_tell's feature size (= --img_feat_size); unused by the transformer models, "
                        "as in ORT")
    g.add_argument("--use_bn", type=int, default=0,
                   help="ORT's BatchNorm1d in att_embed (1 before, 2 before and after): only 0 is implemented")
    g.add_argument("--att_hid_size", type=int, default=512,
                   help="ORT's attention-LSTM option: unused by the models here, as by ORT's relation transformer")
    g.add_argument("--logit_layers", type=int, default=1,
                   help="ORT's attention-LSTM option: unused by the models here, as by ORT's relation transformer")


# ORT option names stored in ORT's infos pickles -> this implementation's names (issue 17).
ORT_RENAMES = {"input_fc_dir": "input_fc_feat_dir", "input_att_dir": "input_img_feat_dir",
               "att_feat_size": "img_feat_size", "drop_prob_lm": "dropout", "norm_att_feat": "norm_img_feat"}
# Options that shape the weights: a model is always rebuilt from these as its infos saved them.
ARCH_KEYS = ("caption_model", "ff_size", "num_layers", "input_encoding_size", "img_feat_size", "heads", "num_grids",
             "use_grid", "use_box", "enc_pos_embedding", "enc_pos_type", "cross_attn", "norm", "ff_activation",
             "rnn_type", "hidden_size", "vocab_size", "seq_length", "box_trignometric_embedding", "legacy_extra_skip")


def _rnn_size_target(caption_model: str) -> str:
    return "hidden_size" if caption_model == "show_tell" else "ff_size"


def native_options(saved: dict, source: Any) -> dict:
    """A saved `opt` (ours, HEAD's or ORT's) in this implementation's option names.

    ORT's infos store `rnn_size` (the transformer's d_ff), `att_feat_size`, `drop_prob_lm`, `input_att_dir`, ...;
    they become `ff_size`, `img_feat_size`, `dropout`, `input_img_feat_dir`, so the model is rebuilt from them.
    """
    out = dict(saved)
    from_ort = "rnn_size" in out and "ff_size" not in out
    model = str(out.get("caption_model", ""))
    if from_ort and model not in ORT_MODELS:
        raise InputError(source, f"ORT's '{model}' model is not implemented here (only relation_transformer is)",
                         field="caption_model")
    if int(out.pop("use_bn", 0) or 0):
        raise InputError(source, "ORT's BatchNorm att_embed (use_bn 1/2) is not implemented", field="use_bn")
    fc = out.pop("fc_feat_size", None)
    if fc is not None and model == "show_tell" and "img_feat_size" not in out:
        out["img_feat_size"] = fc
    for ort_name, name in ORT_RENAMES.items():
        if ort_name in out:
            value = out.pop(ort_name)
            out.setdefault(name, value)
    rnn = out.pop("rnn_size", None)
    if rnn is not None:
        out.setdefault(_rnn_size_target(model), rnn)
    for name in ("att_hid_size", "logit_layers"):
        out.pop(name, None)
    return out


def resolve_ort_flags(opt: argparse.Namespace, given: set[str]) -> None:
    """Apply --rnn_size / --fc_feat_size to this implementation's options; refuse what is not implemented."""
    for ort_name, target in (("rnn_size", _rnn_size_target(opt.caption_model)),
                             ("fc_feat_size", "img_feat_size" if opt.caption_model == "show_tell" else None)):
        value = getattr(opt, ort_name)
        delattr(opt, ort_name)
        if value is None or target is None:
            continue
        if target in given and getattr(opt, target) != value:
            raise SystemExit(f"error: --{ort_name} {value} and --{target} {getattr(opt, target)} disagree "
                             f"(--{ort_name} is ORT's name for --{target})")
        setattr(opt, target, value)
        given.add(target)
    if opt.use_bn:
        raise SystemExit("error: --use_bn: ORT's BatchNorm att_embed is not implemented (only 0)")
    del opt.use_bn, opt.att_hid_size, opt.logit_layers


def explicit_options(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> set[str]:
    """Names (dests) of the options given on the command line, whatever their value."""
    probe = copy.deepcopy(parser)
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    return set(vars(probe.parse_args(argv)))


def train_parser() -> argparse.ArgumentParser:
    """Parser of train.py."""
    p = argparse.ArgumentParser(description="Train a captioner (cross-entropy, then self-critical).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_args(p, train=True)
    p.add_argument("--start_from", type=str, default=None,
                   help="resume from this directory (infos_<id>.pkl or infos.pkl + model.pth/model.pt)")
    p.add_argument("--cached_tokens", type=str, default="coco-train-idxs",
                   help="CIDEr-D document frequencies: a path, or a name looked up as <data_dir>/<name>.p")
    p.add_argument("--data_dir", type=str, default="data", help="where --cached_tokens names are looked up")
    add_model_args(p)
    p.add_argument("--max_epochs", type=int, default=30, help="train epochs [start_epoch, max_epochs)")
    p.add_argument("--batch_size", type=int, default=16, help="images per batch")
    p.add_argument("--grad_clip", type=float, default=0.1, help="clamp every gradient element to [-c, c]")
    p.add_argument("--self_critical_after", type=int, default=-1, help="epoch at which SCST starts (-1 never)")
    p.add_argument("--seq_per_img", type=int, default=5, help="captions per image per batch")
    p.add_argument("--beam_size", type=int, default=1, help="beam used for validation during training")
    p.add_argument("--optim", type=str, default="adam", choices=list(OPTIMS), help="optimiser")
    p.add_argument("--learning_rate", type=float, default=4e-4, help="base LR (ignored with --noamopt)")
    p.add_argument("--learning_rate_decay_start", type=int, default=-1, help="epoch to start step decay (-1 off)")
    p.add_argument("--learning_rate_decay_every", type=int, default=3, help="epochs per decay step")
    p.add_argument("--learning_rate_decay_rate", type=float, default=0.8, help="decay factor")
    p.add_argument("--optim_alpha", type=float, default=0.9, help="Adam beta1 / RMSprop alpha / SGD momentum")
    p.add_argument("--optim_beta", type=float, default=0.999, help="Adam beta2")
    p.add_argument("--optim_epsilon", type=float, default=1e-8, help="optimiser epsilon")
    p.add_argument("--weight_decay", type=float, default=0, help="weight decay")
    p.add_argument("--scheduled_sampling_start", type=int, default=-1, help="epoch to start scheduled sampling (-1 off)")
    p.add_argument("--scheduled_sampling_increase_every", type=int, default=5, help="epochs per increase")
    p.add_argument("--scheduled_sampling_increase_prob", type=float, default=0.05, help="increment")
    p.add_argument("--scheduled_sampling_max_prob", type=float, default=0.25, help="cap")
    p.add_argument("--val_images_use", type=int, default=3200, help="val images per validation (-1 all)")
    p.add_argument("--save_checkpoint_every", type=int, default=100, help="iterations between checkpoint saves")
    p.add_argument("--perform_validation_every", type=int, default=2500, help="iterations between validations")
    p.add_argument("--checkpoint_path", type=str, default="save", help="output directory (also TensorBoard logs)")
    p.add_argument("--language_eval", type=int, default=0,
                   help="1 = COCO metrics at validation; best model by CIDEr (else by val loss)")
    p.add_argument("--ann_file", type=str, default="coco-caption/annotations/captions_val2014.json",
                   help="COCO captions file with the references for --language_eval")
    p.add_argument("--losses_log_every", type=int, default=15, help="iterations between loss-history entries")
    p.add_argument("--load_best_score", type=int, default=1, help="1 = restore best_val_score when resuming")
    p.add_argument("--id", type=str, default="", help="run id (file names infos_<id>.pkl, eval_results/<id>_val.json)")
    p.add_argument("--train_only", type=str2bool, default=False, help="True = do not add restval images to train")
    p.add_argument("--cider_reward_weight", type=float, default=1, help="SCST reward weight of CIDEr-D")
    p.add_argument("--bleu_reward_weight", type=float, default=0, help="SCST reward weight of BLEU-4")
    p.add_argument("--label_smoothing", type=float, default=0, help=">0 uses the KL label-smoothing loss")
    p.add_argument("--noamopt", action="store_true", help="Noam schedule with Adam(0.9, 0.98, 1e-9)")
    p.add_argument("--noamopt_warmup", type=int, default=20000, help="Noam warm-up steps")
    p.add_argument("--noamopt_factor", type=float, default=1, help="Noam factor")
    p.add_argument("--reduce_on_plateau", action="store_true", help="halve the LR when validation stalls (patience 3)")
    p.add_argument("--max_iters", type=int, default=-1, help="stop after this many iterations (-1: run max_epochs)")
    add_trust_flag(p)
    add_speed_args(p)
    add_num_threads_flag(p)
    add_report_to_flag(p)
    add_ort_args(p)
    return p


def check_model_opt(opt: argparse.Namespace) -> None:
    """Reject unusable model options with a clear message."""
    if opt.caption_model not in CAPTION_MODELS:
        raise SystemExit(f"error: --caption_model {opt.caption_model!r} is not available; choose from {CAPTION_MODELS} "
                         "(the other names in the original's help never had published code)")
    if opt.use_local_attn or opt.adaptive_dec_self_attn:
        raise SystemExit("error: --use_local_attn / --adaptive_dec_self_attn: the original never published this code")
    g = int(round(math.sqrt(opt.num_grids)))
    if g * g != opt.num_grids:
        raise SystemExit(f"error: --num_grids {opt.num_grids} is not a perfect square")
    if opt.caption_model == "spatial_pe":
        opt.use_grid = True  # spec 9.1
    if opt.caption_model in ("ort", "relation_transformer"):
        opt.use_box = True
    if opt.use_grid and opt.use_box and opt.caption_model not in ("ort", "relation_transformer"):
        raise SystemExit("error: --use_grid and --use_box are mutually exclusive")
    if opt.caption_model in ("ort", "relation_transformer") and opt.use_grid:
        raise SystemExit("error: the ort model uses relative boxes, not grid vectors (drop --use_grid)")


def parse_train_opt(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check train.py options (the original's asserts, minus the noamopt-only-transformer one)."""
    parser = train_parser()
    opt = parser.parse_args(argv)
    given = explicit_options(parser, argv)
    resolve_ort_flags(opt, given)
    check_model_opt(opt)
    opt._given = given  # resuming takes every architecture option not given here from the infos
    for name in ("ff_size", "num_layers", "input_encoding_size", "batch_size", "seq_per_img", "beam_size",
                 "save_checkpoint_every", "losses_log_every"):
        if getattr(opt, name) <= 0:
            raise SystemExit(f"error: --{name} should be greater than 0")
    if not 0 <= opt.dropout < 1:
        raise SystemExit("error: --dropout should be in [0, 1)")
    for name in ("language_eval", "load_best_score"):
        if getattr(opt, name) not in (0, 1):
            raise SystemExit(f"error: --{name} should be 0 or 1")
    if opt.device not in ("cpu", "cuda"):
        raise SystemExit("error: --device should be cpu or cuda")
    if opt.caption_model == "show_tell" and not opt.input_fc_feat_dir:
        raise SystemExit("error: show_tell needs --input_fc_feat_dir")
    if opt.noamopt and opt.caption_model == "show_tell":
        raise SystemExit("error: --noamopt is for the transformer models")
    if opt.noamopt and opt.reduce_on_plateau:
        raise SystemExit("error: --noamopt and --reduce_on_plateau are mutually exclusive")
    return opt


def add_decoding_args(p: argparse.ArgumentParser) -> None:
    """Decoding flags shared by eval.py and eval_ensemble.py (same names and defaults in both originals)."""
    p.add_argument("--sample_max", type=int, default=1, help="1 greedy/beam, 0 sample")
    p.add_argument("--max_ppl", type=int, default=0, help="rank beams by length-normalised log-prob")
    p.add_argument("--beam_size", type=int, default=2, help="beam width")
    p.add_argument("--group_size", type=int, default=1, help="diverse beam search groups")
    p.add_argument("--diversity_lambda", type=float, default=0.5, help="diversity penalty")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--decoding_constraint", type=int, default=0, help="1 = never repeat the previous word")


def eval_parser() -> argparse.ArgumentParser:
    """Parser of eval.py."""
    p = argparse.ArgumentParser(description="Evaluate a trained captioner on a split.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", type=str, default="", help="model state_dict (model.pth / model-best.pth)")
    p.add_argument("--cnn_model", type=str, default="resnet101", help="raw-image mode only (refused: needs features)")
    p.add_argument("--infos_path", type=str, default="", help="infos pickle of the run (opt + vocab)")
    p.add_argument("--batch_size", type=int, default=0, help=">0 overrides the infos batch size")
    p.add_argument("--num_images", type=int, default=-1, help="images to evaluate (-1 all)")
    p.add_argument("--language_eval", type=int, default=0, help="1 = compute COCO metrics")
    p.add_argument("--dump_images", type=int, default=1, help="copy each image to <vis_dir>/imgs/<id>.jpg")
    p.add_argument("--dump_json", type=int, default=1, help="write <vis_dir>/vis.json")
    p.add_argument("--dump_path", type=int, default=0, help="add file_name to each prediction")
    p.add_argument("--dump_png", type=int, default=0,
                   help="N>0: write a PNG for the first N images (regions, grid, generated vs reference captions)")
    add_decoding_args(p)
    p.add_argument("--image_folder", type=str, default="",
                   help="raw images: caption every image of this folder (regions from --detector_weights or "
                        "--feature_dir; spatial_captioning/image_folder.py)")
    p.add_argument("--image_root", type=str, default="", help="root of the images (dumps, PNGs, report data)")
    p.add_argument("--cnn_weight_dir", type=str, default="", help="raw-image mode only (refused)")
    p.add_argument("--split", type=str, default="test", choices=["train", "val", "test"], help="split to evaluate")
    p.add_argument("--coco_json", type=str, default="", help="raw-image mode id list (refused)")
    p.add_argument("--id", type=str, default="", help="result file id; empty = from infos")
    p.add_argument("--verbose_beam", type=int, default=1, help="print every final beam of each image")
    p.add_argument("--verbose_loss", type=int, default=0, help="also compute the XE loss on the references")
    p.add_argument("--caption_model", type=str, default="", help="ignored unless equal to the infos one (printed)")
    p.add_argument("--ann_file", type=str, default="coco-caption/annotations/captions_val2014.json",
                   help="COCO captions file with the references for --language_eval")
    p.add_argument("--vis_dir", type=str, default="",
                   help="where vis.json / imgs / PNGs go (default: <directory of --model>/vis; the original: vis)")
    p.add_argument("--eval_results_dir", type=str, default="",
                   help="where <id>_<split>.json goes (default: <directory of --model>/eval_results; "
                        "the original: eval_results)")
    p.add_argument("--overwrite", type=int, default=0,
                   help="1 = replace output files of an earlier evaluation (default: refuse before any work)")
    p.add_argument("--drop_unreferenced", type=int, default=0,
                   help="1 = score only the predictions whose image has references in --ann_file (the original "
                        "drops the others; the count is written to the results file); default: such a prediction "
                        "is an error")
    p.add_argument("--use_box", type=str2bool, default=None,
                   help="ORT's eval flag; the model's own value (from the infos) is always used")
    add_trust_flag(p)
    add_speed_args(p)
    add_num_threads_flag(p)
    add_report_to_flag(p)
    add_data_args(p, train=False)
    from spatial_captioning.image_folder import add_image_folder_args
    add_image_folder_args(p)
    return p


# Options that describe decoding or data locations: the CLI wins over the infos file (spec 2.8).
EVAL_CLI_WINS = ("id", "batch_size", "beam_size", "start_from", "language_eval", "device", "input_json",
                 "input_label_h5", "input_img_feat_dir", "input_fc_feat_dir", "input_box_dir", "input_rel_box_dir",
                 "input_grid_vec_dir", "seed")


def parse_eval_opt(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, set[str]]:
    """Parse eval.py options; also return the names given explicitly on the command line."""
    parser = eval_parser()
    opt = parser.parse_args(argv)
    given = explicit_options(parser, argv)
    if opt.coco_json or opt.cnn_weight_dir:
        raise SystemExit("error: raw-image mode (--coco_json/--cnn_weight_dir) needs the original's "
                         "DataLoaderRaw, which was never published; extract bottom-up features and evaluate those")
    return opt, given


def ensemble_parser() -> argparse.ArgumentParser:
    """Flags of the original eval_ensemble.py plus the data/output locations of eval.py."""
    p = argparse.ArgumentParser(description="Evaluate an ensemble of trained runs.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ids", nargs="+", required=True, help="run ids to ensemble")
    p.add_argument("--checkpoint_root", default="checkpoints", help="README layout root (<root>/<id>/)")
    p.add_argument("--batch_size", type=int, default=0, help=">0 overrides the first run's batch size")
    p.add_argument("--num_images", type=int, default=-1, help="images to evaluate (-1 all)")
    p.add_argument("--language_eval", type=int, default=0, help="1 = compute COCO metrics")
    p.add_argument("--lang_metrics", nargs="+", default=None, help="metrics of --language_eval")
    p.add_argument("--ann_file", default="coco-caption/annotations/captions_val2014.json", help="COCO references")
    p.add_argument("--dump_images", type=int, default=1, help="copy each image to <vis_dir>/imgs/")
    p.add_argument("--dump_json", type=int, default=1, help="write <vis_dir>/vis.json")
    p.add_argument("--dump_path", type=int, default=0, help="add file_name to each prediction")
    add_decoding_args(p)
    p.add_argument("--image_folder", default="", help="raw-image mode (never published: refused)")
    p.add_argument("--image_root", default="", help="root of the images for dumps")
    p.add_argument("--input_att_dir", default="", help="region features (empty: from the first run's infos)")
    p.add_argument("--input_box_dir", default="", help="absolute boxes (empty: from infos)")
    p.add_argument("--input_grid_vec_dir", default="", help="grid vectors (empty: from infos)")
    p.add_argument("--input_rel_box_dir", default="", help="relative boxes (empty: from infos)")
    p.add_argument("--input_label_h5", default="", help="label h5 (empty: from infos)")
    p.add_argument("--input_json", default="", help="cocotalk.json (empty: from infos)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split to evaluate")
    p.add_argument("--coco_json", default="", help="raw-image mode id list (refused)")
    p.add_argument("--seq_length", type=int, default=40, help="maximum decoded length")
    p.add_argument("--id", default="", help="result id (default: the ids joined by '_')")
    p.add_argument("--verbose_beam", type=int, default=1, help="print every final beam")
    p.add_argument("--verbose_loss", type=int, default=0, help="also compute the XE loss")
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--vis_dir", default="",
                   help="where vis.json goes (default: <first run's directory>/vis_<id>; the original: vis)")
    p.add_argument("--eval_results_dir", default="",
                   help="where <id>_<split>.json goes (default: <first run's directory>/eval_results)")
    p.add_argument("--overwrite", type=int, default=0, help="1 = replace output files of an earlier evaluation")
    p.add_argument("--drop_unreferenced", type=int, default=0,
                   help="1 = score only predictions whose image has references (the original's behaviour)")
    add_trust_flag(p)
    add_speed_args(p)
    add_num_threads_flag(p)
    add_report_to_flag(p)
    return p
