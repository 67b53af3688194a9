"""Command-line flags (spec 2.2, shared by train.py and test.py), metadata paths and the run name."""
from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common.errors import InputError
from common.experiment_log import add_report_to_flag
from common.safe_pickle import add_trust_flag
from common.threads import add_num_threads_flag

EXPERIMENTS = ("AbstractionEmbedding",)
MODELS = ("AbstractionEmbeddingModule",)
DATASETS = ("moments", "kinetics")
NUM_NODES = {"moments": 391, "kinetics": 608, "multimoments": 391}
FEATURE_DIMS = {"resnet3d50": 2048}
DEFAULT_FEATURE_DIM = 2048
CRITERIA = ("CE", "MSE", "BCE")
LOSS_NAMES = ("embed", "abstr")
LOGGERS = ("AbstractionLogger",)
EMBEDDING_DIM = 300
BOTTLENECK_DIM = 512


def str2bool(value: str | bool) -> bool:
    """yes/true/t/y/1 -> True, no/false/f/n/0 -> False (the original's str2bool)."""
    if isinstance(value, bool):
        return value
    if value.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if value.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"boolean value expected, got {value!r}")


TRAINING_ONLY = ("num_epochs", "start_epoch", "max_step", "val_freq", "checkpoint_freq", "clip_gradient",
                 "fused_optimizer", "lr_schedule", "return_metric")
# Accepted by test.py (the original shared one parser) but hidden from its --help: evaluation never reads them.
HIDDEN_IN_TEST = TRAINING_ONLY + ("evaluate", "checkpoint_dir", "optimizer", "lr")


def build_parser(prog: str | None = None, description: str | None = None,
                 mode: str = "train") -> argparse.ArgumentParser:
    """The original flags (names, short forms, defaults) plus the reimplementation's additions.

    ``mode="test"`` keeps accepting every original flag but lists only those test.py uses in --help.
    """
    if mode not in ("train", "test"):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)

    def add(*names: str, help: str, **kwargs) -> None:  # noqa: A002 - argparse's own keyword
        dest = kwargs.get("dest") or next(n for n in names if n.startswith("--"))[2:]
        p.add_argument(*names, help=argparse.SUPPRESS if mode == "test" and dest in HIDDEN_IN_TEST else help,
                       **kwargs)

    add("-e", "--experiment", default="AbstractionEmbedding", choices=EXPERIMENTS,
        help="experiment class (only AbstractionEmbedding exists)")
    add("-i", "--exp_id", default=None, help="run id put in the run name ('None' when unset)")
    add("-d", "--dataset", default="moments", choices=DATASETS,
        help="which metadata files and node count (moments: 391, kinetics: 608)")
    add("-m", "--model_name", "--model", dest="model_name", default="AbstractionEmbeddingModule",
        choices=MODELS, help="model class (--model is the README's spelling)")
    add("-b", "--batch_size", type=int, default=256, help="sets per batch (train and val)")
    add("--optimizer", default="Adam", choices=("Adam", "SGD"), help="Adam(wd=5e-4) or SGD(momentum=0.9, wd=5e-4)")
    add("--criterion", nargs="+", default=["MSE", "CE"], choices=CRITERIA,
        help="loss names; MSE is the embed loss and CE the abstraction loss, both required")
    add("-l", "--loss_weights", type=float, nargs="+", default=[1, 1],
        help="weights of the embed and abstr losses (ints by default, so the run name says 1-1)")
    add("--lr", type=float, default=1e-4, help="learning rate")
    add("-s", "--scales", type=int, nargs="+", default=[1, 2, 3, 4], help="subset sizes with their own relation MLP")
    add("-r", "--resume", default=None,
        help="checkpoint (.pth.tar, original layout) to load; also renames the run (spec 2.4)")
    add("--log_dir", default="logs", help="where <Exp>/<Model>/<name>*.txt logs go")
    add("--checkpoint_dir", default="checkpoints", help="where <Exp>/<Model>/<name>_*.pth.tar go")
    add("--output_dir", default="outputs", help="where <Exp>/<Model>/<name>_results.json and the visualisation PNG go")
    add("--metadata_dir", default="metadata", help="directory holding the downloaded metadata")
    add("--logger_name", default="AbstractionLogger", choices=LOGGERS, help="logger class")
    add("--num_epochs", type=int, default=60, help="epochs (also T_max of either LR schedule)")
    add("--start_epoch", type=int, default=0, help="first epoch (replaced by the checkpoint's on resume)")
    add("--max_step", type=int, default=None, help="stop each epoch after this many batches")
    add("--val_freq", type=int, default=1, help="validate every N epochs (and after the last)")
    add("--log_freq", type=int, default=20, help="write a progress line every N batches")
    add("--checkpoint_freq", type=int, default=1000,
        help="also save a resumable state every N batches (besides each validation)")
    add("--cudnn_enabled", type=str2bool, default=True, help="torch.backends.cudnn.enabled")
    add("--cudnn_benchmark", type=str2bool, default=True, help="torch.backends.cudnn.benchmark")
    add("--clip_gradient", type=int, default=20, help="max total gradient norm")
    add("--evaluate", action="store_true",
        help="train.py: only evaluate the (resumed) model on the three tasks, as test.py does")
    add("-bm", "--basemodel_name", default="resnet3d50",
        help="backbone whose cached features are read (resnet3d50_<ds>_<split>_features.pth)")
    add("--prefix", default="", help="prepended to the run name")
    add("--return_metric", default="top1@abstr", help="validation meter that picks the best checkpoint")
    # Additions (spec 8 and 9).
    add("--device", default=None, choices=("cpu", "cuda"), help="default: cuda when available")
    add("--seed", type=int, default=0, help="seed of python, numpy, torch and the data order")
    add("--num_workers", type=int, default=2, help="training DataLoader workers (validation: at most 1)")
    # Spec 9.1 (K): the original's quirk is the default, so that the released recipe is the paper's run.
    add("--lr_schedule", default="legacy", choices=("legacy", "cosine"),
        help="legacy: the original's scheduler.step(val_loss), i.e. lr = lr0*(1+cos(pi*val_loss/num_epochs))/2 "
             "after each validation; cosine: per-epoch CosineAnnealingLR(T_max=num_epochs)")
    add("--model_config", default=None,
        help="JSON of model sizes (name in set_abstraction/model_configs or a path); "
             "default: the released sizes for --dataset")
    # Speed (issue 15): each off by default except the fused optimizer, which computes the same update.
    add("--amp", default="none", choices=("none", "bf16", "fp16"),
        help="autocast the model's forward: bf16 (CPU or CUDA) or fp16 (CUDA, with a gradient scaler); "
             "losses and the optimizer stay fp32")
    add("--compile", action="store_true", help="torch.compile the model for training and validation")
    add("--fused_optimizer", default="auto", choices=("auto", "on", "off"),
        help="the fused Adam/SGD kernel (one kernel for all parameters, ~10x faster steps on CPU); "
             "auto: on where torch has it (CPU, CUDA); off: the original's per-parameter loop")
    add_trust_flag(p)
    add_num_threads_flag(p)
    add_report_to_flag(p)
    return p


def validate_args(args: argparse.Namespace) -> argparse.Namespace:
    """Refuse flag combinations the model cannot honour (spec 9.12 F), with a one-line message."""
    crit = set(args.criterion)
    if not {"MSE", "CE"} <= crit:
        raise InputError("--criterion", f"needs both MSE (embed loss) and CE (abstr loss), got {args.criterion}")
    if "BCE" in crit:
        raise InputError("--criterion", "BCE has no role: its dataset was broken in the original (spec 4.5)")
    if len(args.loss_weights) != len(LOSS_NAMES):
        raise InputError("--loss_weights", f"needs {len(LOSS_NAMES)} values (embed, abstr), got {args.loss_weights}")
    if args.basemodel_name == "i3d":
        raise InputError("--basemodel_name", "i3d routed to a loader that never worked in the original (spec 9.17)")
    if sorted(set(args.scales)) != list(args.scales) or min(args.scales) < 1 or max(args.scales) > 4:
        raise InputError("--scales", f"must be increasing, distinct, within 1..4 (sets hold 4 videos), got {args.scales}")
    if args.max_step is not None and args.max_step < 1:
        raise InputError("--max_step", "must be >= 1")
    meters = {"abstr", "embed", "full", "top1@abstr", "top5@abstr"} | {
        f"top{k}@abstr_{s}" for k in (1, 5) for s in range(min(args.scales), 5)}
    if args.return_metric not in meters:
        raise InputError("--return_metric", f"no validation meter {args.return_metric!r}; choose from {sorted(meters)}")
    if args.num_threads is not None and args.num_threads < 1:
        raise InputError("--num_threads", "must be >= 1")
    for flag in ("val_freq", "log_freq", "checkpoint_freq", "num_epochs", "batch_size"):
        if getattr(args, flag) < 1:
            raise InputError(f"--{flag}", "must be >= 1")
    return args


def parse_args(argv: Sequence[str] | None = None, prog: str | None = None,
               description: str | None = None, mode: str = "train") -> argparse.Namespace:
    """Parse and check the flags (``mode`` picks which flags --help lists)."""
    return validate_args(build_parser(prog, description, mode).parse_args(argv))


def training_only_flags_given(args: argparse.Namespace) -> list[str]:
    """Training-only flags set to non-default values (an evaluation warns that they have no effect)."""
    defaults = build_parser()
    return [f"--{name}" for name in TRAINING_ONLY if getattr(args, name) != defaults.get_default(name)]


def loss_weights(args: argparse.Namespace) -> dict[str, float]:
    """{'embed': w0, 'abstr': w1}."""
    return dict(zip(LOSS_NAMES, args.loss_weights))


def model_name(scales: Sequence[int]) -> str:
    """SAM_<scales>, e.g. SAM_1-2-3-4."""
    return "SAM_" + "-".join(str(s) for s in scales)


def run_name(args: argparse.Namespace) -> str:
    """The run name of spec 2.4 (kept for the README's log/checkpoint names, spec 9.13 K)."""
    if args.resume:
        # Unescaped dots as in the original: an _epoch_N.pth.tar path keeps its extension.
        stem = re.sub("(_checkpoint.pth.tar|_best.pth.tar)$", "", str(args.resume))
        name = args.prefix + Path(stem).name
        parts = name.split("_")
        parts[0] = args.experiment
        return "_".join(parts)
    parts = [
        args.experiment,
        str(args.exp_id),
        args.dataset,
        args.basemodel_name,
        "-".join(str(w) for w in args.loss_weights),
        "-".join(args.criterion),
        f"{args.optimizer}-{args.lr}",
        model_name(args.scales),
    ]
    return args.prefix + "_".join(parts)


@dataclass
class MetadataPaths:
    """Where the metadata files of one dataset live (spec 2.3), under --metadata_dir (spec 9.12 F)."""

    root: Path
    dataset: str
    basemodel: str = "resnet3d50"

    def graph(self) -> Path:
        return self.root / f"{self.dataset}_graph.json"

    def category_embeddings(self) -> Path:
        return self.root / f"{self.dataset}_category_embeddings.pth"

    def sets(self, split: str) -> Path:
        """Abstraction sets; split 'test' is the human sets file."""
        name = "human" if split == "test" else split
        return self.root / f"{self.dataset}_{name}_abstraction_sets.json"

    def features(self, split: str) -> Path:
        return self.root / f"{self.basemodel}_{self.dataset}_{split}_features.pth"

    def embeddings(self, split: str) -> Path | None:
        """Per-video embeddings; none is read for the test split."""
        return None if split == "test" else self.root / f"{self.dataset}_{split}_embeddings.pth"

    def listfile(self, split: str) -> Path:
        return self.root / f"{self.dataset}_{split}_listfile.txt"

    def pretrained(self) -> Path:
        return self.root / f"AbstractionEmbedding_{self.dataset}_SAM_1-2-3-4_best.pth.tar"


def metadata_paths(args: argparse.Namespace) -> MetadataPaths:
    """The MetadataPaths for the parsed flags."""
    return MetadataPaths(Path(args.metadata_dir), args.dataset, args.basemodel_name)


def feature_dim(basemodel: str) -> int:
    """Backbone feature size (2048 for resnet3d50 and by default)."""
    return FEATURE_DIMS.get(basemodel, DEFAULT_FEATURE_DIM)
