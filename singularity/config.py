"""YAML config + ``key=value`` dotlist overrides (OmegaConf), as the original ``setup_config`` (spec 2.3)."""
from __future__ import annotations

import argparse
import difflib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from common.errors import InputError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
USAGE = ("usage: python tasks/<task>.py CONFIG.yaml [key=value ...] [--num_threads N] [--report_to tensorboard,wandb] "
         "[--compile] [--trust_checkpoint]  (OmegaConf dotlist: a.b=1, key=[x,y], x=None)")


def find_config(path_or_name: str) -> Path:
    """The YAML path: as given, or a bundled ``configs/<name>``."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    bundled = CONFIG_DIR / path.name
    if bundled.is_file():
        return bundled
    raise InputError(path_or_name, "config file not found (neither a path nor a bundled configs/ name)")


def convert_types(node):
    """Strings ``None``/``none`` -> None, recursively, lists included (pitfall 9.16 F)."""
    if isinstance(node, (DictConfig, dict)):
        for key in list(node.keys()):
            node[key] = convert_types(node[key]) if not OmegaConf.is_missing(node, key) else node[key]
        return node
    if isinstance(node, (ListConfig, list)):
        for i in range(len(node)):
            node[i] = convert_types(node[i])
        return node
    if isinstance(node, str) and node in ("None", "none"):
        return None
    return node


# ``--flag [VALUE]`` tokens every script of the project takes, and the config key each sets (issue 15/16)
VALUE_FLAGS = {"num_threads": "num_threads", "report_to": "report_to", "compile": "compile"}
SWITCH_FLAGS = ("compile",)


def parse_overrides(tokens: Sequence[str]) -> list[str]:
    """Dotlist tokens; ``--local_rank=N`` (torch.distributed.launch) is dropped, other ``--x`` refused."""
    kept, pending = [], None
    for token in tokens:
        if token.startswith("--local_rank") or token.startswith("--local-rank"):
            continue  # LOCAL_RANK is read from the environment (pitfall 9.16 F)
        if token == "--trust_checkpoint":  # the flag every pickle-reading CLI of the project has
            kept.append("trust_checkpoint=True")
            continue
        if pending is not None:  # the value of a preceding ``--flag VALUE``
            kept.append(f"{pending}={token}")
            pending = None
            continue
        name = token[2:].split("=", 1)[0]
        if token.startswith("--") and name in VALUE_FLAGS:  # --num_threads 2, --report_to=tensorboard, --compile
            if "=" in token:
                kept.append(f"{VALUE_FLAGS[name]}={token.split('=', 1)[1]}")
            elif name in SWITCH_FLAGS:
                kept.append(f"{VALUE_FLAGS[name]}=True")
            else:
                pending = VALUE_FLAGS[name]
            continue
        if token.startswith("-") or "=" not in token:
            raise InputError("command line", f"cannot parse {token!r}: {USAGE}")
        kept.append(token)
    if pending is not None:
        raise InputError("command line", f"--{pending} needs a value: {USAGE}")
    return kept


# Keys read by the code that a YAML may leave out, with their type and default (added to the original's, or
# honoured by the original only when present: optimizer.opt_eps / opt_args / momentum, spec 2.4).
OPTIONAL_KEYS: dict[str, tuple[type, object, str]] = {
    "eval_after_training": (bool, True, "evaluate ckpt_best on every test_file entry after training"),
    "resize_learned_tables": (bool, False, "allow padding/truncating/interpolating learned temporal embeddings "
                                           "and resampling relative-position tables (the original did it silently)"),
    "skip_unreadable_media": (bool, False, "evaluation: skip unreadable videos/images and count them in the "
                                           "results file (default: an unreadable item is an error)"),
    "num_threads": (int, None, "CPU threads torch may use (also --num_threads N; default: the cores this "
                               "process may run on, divided by the ranks on this node, at most OMP_NUM_THREADS)"),
    "report_to": (str, "none", "also send metrics.jsonl's scalars to tensorboard and/or wandb, comma-separated "
                               "(also --report_to X)"),
    "attn_implementation": (str, "sdpa", "attention kernel of BEiT/BERT: sdpa (fused "
                                         "scaled_dot_product_attention) or eager (the original's matmul-softmax)"),
    "compile": (bool, False, "torch.compile the vision encoder, text encoder and QA decoder (also --compile)"),
    "compile_backend": (str, "inductor", "torch.compile backend (inductor; aot_eager to check graphs quickly)"),
    "itm_batch_size": (int, 0, "retrieval evaluation: (query, candidate) pairs per ITM forward across queries; "
                               "0 = one query's top-k per forward (the original's grouping)"),
    "optimizer.fused": (bool, None, "fused AdamW/Adam kernel (default: on for CUDA and CPU parameters; False: "
                                    "the for-each kernel)"),
    "optimizer.opt_eps": (float, 1e-8, "Adam epsilon"),
    "optimizer.opt_args": (dict, None, "extra optimizer keyword arguments"),
    "optimizer.momentum": (float, None, "SGD momentum (opt: sgd / nesterov / momentum)"),
}
# Mappings whose entries are the user's to name (new corpora, test sets, hub names, optimizer kwargs).
OPEN_MAPPINGS = ("available_corpus", "test_file", "vit_zoo", "optimizer.opt_args")
# Keys that take an int or a per-media-type mapping (pitfall 9.23).
INT_OR_MAPPING = ("max_txt_l",)
# Keys whose YAML value may be an int but that take any real number.
FLOAT_KEYS = ("optimizer.lr", "optimizer.weight_decay", "optimizer.max_grad_norm", "optimizer.different_lr.lr",
              "optimizer.opt_eps", "optimizer.momentum", "scheduler.min_lr_multi", "scheduler.warmup_epochs",
              "temp", "mlm_prob", "loss_weight.itc", "loss_weight.itm", "loss_weight.mlm")


def _type_name(value) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "mapping"}.get(
        type(value), type(value).__name__)


def _flat_keys(node, prefix: str = "") -> dict[str, object]:
    """``{dotted key: value}`` of a plain nested dict, mappings included."""
    out = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        out[name] = value
        if isinstance(value, dict) and name not in OPEN_MAPPINGS:
            out.update(_flat_keys(value, name + "."))
    return out


def _closest(name: str, candidates) -> str:
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _value_fits(key: str, old, new) -> bool:
    """Whether an override value ``new`` may replace ``old`` (the YAML's value or the optional key's type)."""
    if new is None or (isinstance(new, str) and new in ("None", "none")):
        return not isinstance(old, (bool, int, float)) or old is None
    if old is None or (isinstance(old, str) and old in ("None", "none")):
        return True  # keys left empty in the YAML (pretrained_path, stop_key, output_dir, ...) take any value
    if isinstance(old, type):
        old = old() if old is not dict else {}
    if isinstance(old, bool):
        return isinstance(new, bool)
    if isinstance(old, int) and key not in FLOAT_KEYS:
        return isinstance(new, int) and not isinstance(new, bool)
    if isinstance(old, (int, float)):
        return isinstance(new, (int, float)) and not isinstance(new, bool)
    if isinstance(old, str):
        return isinstance(new, (str, int, float)) and not isinstance(new, bool)
    if isinstance(old, list):
        return isinstance(new, list)
    if isinstance(old, dict):
        return isinstance(new, dict)
    return True


def check_overrides(path: Path, base: DictConfig, overrides: DictConfig) -> None:
    """Every override names a key of the YAML (or an optional one) and parses to its type (issue 11)."""
    known = _flat_keys(OmegaConf.to_container(base, resolve=False))
    optional = {k: v[0] for k, v in OPTIONAL_KEYS.items()}
    for key, new in _flat_keys(OmegaConf.to_container(overrides, resolve=False)).items():
        parent = next((m for m in OPEN_MAPPINGS if key.startswith(m + ".")), None)
        if parent is not None and (parent in known or parent in optional):
            continue
        if key in known:
            old = known[key]
        elif key in optional:
            old = optional[key]
        elif any(k.startswith(key + ".") for k in list(known) + list(optional)) and isinstance(new, dict):
            continue  # a mapping given whole: its entries are checked one by one
        else:
            hint = _closest(key, list(known) + list(optional))
            raise InputError(path, f"unknown config key given on the command line{hint}", field=key)
        if isinstance(old, dict) and isinstance(new, dict):
            continue
        if key in INT_OR_MAPPING and isinstance(new, (int, dict)) and not isinstance(new, bool):
            continue
        if not _value_fits(key, old, new):
            want = old.__name__ if isinstance(old, type) else _type_name(old)
            if key in FLOAT_KEYS:
                want = "float"
            article = "an" if want[0] in "aeiou" else "a"
            raise InputError(path, f"expected {article} {want} value (like the config's {old!r}), got {new!r}",
                             field=key)


def _is_sample_type(value) -> bool:
    return value in ("rand", "middle") or bool(re.fullmatch(r"fps\d+(\.\d+)?", str(value)))


def _report_to_ok(value) -> bool:
    from common.experiment_log import parse_report_to

    try:
        parse_report_to(str(value))
    except argparse.ArgumentTypeError:
        return False
    return True


def _at_least(minimum):
    return lambda v: v >= minimum, f"must be >= {minimum}"


RANGES: dict[str, tuple] = {
    "batch_size.image": _at_least(1), "batch_size.video": _at_least(1),
    "batch_size_test.image": _at_least(1), "batch_size_test.video": _at_least(1),
    "scheduler.epochs": _at_least(1), "scheduler.warmup_epochs": _at_least(0),
    "scheduler.min_lr_multi": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "optimizer.lr": (lambda v: v > 0, "must be > 0"), "optimizer.weight_decay": _at_least(0),
    "optimizer.different_lr.lr": (lambda v: v > 0, "must be > 0"),
    "num_workers": _at_least(0), "k_test": _at_least(1), "image_res": _at_least(1), "embed_dim": _at_least(1),
    "video_input.num_frames": _at_least(1), "video_input.num_frames_test": _at_least(1),
    "video_input.cache_decoded": _at_least(0), "max_q_len": _at_least(2), "max_a_len": _at_least(2),
    "temp": (lambda v: 0 < v <= 0.5, "must be in (0, 0.5] (it is clamped to [0.001, 0.5])"),
    "mlm_prob": (lambda v: 0 <= v <= 1, "must be in [0, 1]"), "log_freq": _at_least(1),
    "temporal_vision_encoder.num_layers": _at_least(1), "num_decoder_layers": _at_least(1),
    "eval_frame_ensemble": (lambda v: v in ("concat", "mean", "max", "lse"), "must be concat, mean, max or lse"),
    "scheduler.sched": (lambda v: v == "cosine", "must be cosine (the only schedule of the original)"),
    "num_threads": _at_least(1), "itm_batch_size": _at_least(0),
    "attn_implementation": (lambda v: v in ("sdpa", "eager"), "must be sdpa or eager"),
    "report_to": (lambda v: _report_to_ok(v), "must be none or a comma-separated list of tensorboard, wandb"),
    "video_input.reader": (lambda v: v in ("decord", "av", "opencv"), "must be decord, av or opencv"),
    "video_input.sample_type": (lambda v: _is_sample_type(v), "must be rand, middle or fps<x> (e.g. fps0.5)"),
    "video_input.sample_type_test": (lambda v: _is_sample_type(v), "must be rand, middle or fps<x> (e.g. fps0.5)"),
}


def check_ranges(path: Path, config: DictConfig) -> None:
    """Obvious value ranges (``batch_size.video=-4``, ``scheduler.epochs=0``) -> one-line errors."""
    for key, (ok, rule) in RANGES.items():
        value = OmegaConf.select(config, key, throw_on_resolution_failure=False)
        if value is None or isinstance(value, (bool, DictConfig, ListConfig)):
            continue
        try:
            fine = ok(value)
        except TypeError:
            fine = False
        if not fine:
            raise InputError(path, f"{rule}, got {value!r}", field=key)
    max_txt = OmegaConf.select(config, "max_txt_l", throw_on_resolution_failure=False)
    for key, value in ({"max_txt_l": max_txt} if not isinstance(max_txt, DictConfig) else
                       {f"max_txt_l.{k}": v for k, v in max_txt.items()}).items():
        if isinstance(value, int) and value < 2:
            raise InputError(path, f"must be >= 2 ([CLS] and one token), got {value}", field=key)


def check_consistency(path: Path, config: DictConfig) -> None:
    """Key combinations that would fail only after training (spec 4.6, pitfall 9.18): refused up front."""
    select = lambda key: OmegaConf.select(config, key, throw_on_resolution_failure=False)  # noqa: E731
    if select("eval_x_only"):
        raise InputError(path, "eval_x_only=True is not supported (it crashed in the original, pitfall 9.18)",
                         field="eval_x_only")
    ensemble, frames = select("eval_frame_ensemble"), select("video_input.num_frames")
    if ensemble not in (None, "concat") and frames not in (None, 1):
        raise InputError(path, f"eval_frame_ensemble={ensemble} (late fusion) needs video_input.num_frames=1, got "
                               f"{frames} (spec 4.6)", field="eval_frame_ensemble")
    test_file, test_types = select("test_file"), select("test_types")
    if isinstance(test_file, DictConfig) and test_types is not None:
        for name in test_types:
            if name is not None and name not in test_file:
                raise InputError(path, f"{name!r} is not a test_file entry ({', '.join(test_file.keys())})",
                                 field="test_types")


def load_config(path_or_name: str, overrides: Sequence[str] = (), require_env: bool = True) -> DictConfig:
    """Merge the YAML with the checked dotlist; ``None`` strings converted; env interpolations checked."""
    path = find_config(path_or_name)
    try:
        base = OmegaConf.load(path)
        cli = OmegaConf.from_dotlist(list(parse_overrides(overrides)))
    except InputError:
        raise
    except Exception as err:  # omegaconf raises many types for malformed YAML / dotlists
        raise InputError(path, f"cannot load config: {str(err).splitlines()[0]}") from None
    check_overrides(path, base, cli)
    try:
        config = OmegaConf.merge(base, cli)
    except Exception as err:
        raise InputError(path, f"cannot merge the overrides: {str(err).splitlines()[0]}") from None
    if require_env and "SL_DATA_DIR" in OmegaConf.to_yaml(config) and "SL_DATA_DIR" not in os.environ:
        raise InputError(path, "environment variable SL_DATA_DIR is not set (export SL_DATA_DIR=<data root>, "
                               "see README 'Data layout')", field="data_root")
    if not require_env:
        os.environ.setdefault("SL_DATA_DIR", "SL_DATA_DIR_UNSET")
    convert_types(config)
    check_ranges(path, config)
    check_consistency(path, config)
    if config.get("debug"):
        config.wandb.enable = False
    if config.get("evaluate"):
        if "wandb" in config:
            config.wandb.enable = False
        if config.get("output_dir") is None and config.get("pretrained_path"):
            config.output_dir = str(Path(config.pretrained_path).parent / "eval")
    return config


def describe_keys(path_or_name: str) -> str:
    """``key (type) = default`` for every key of a config and the optional keys (``--help``, issue 16 point 4)."""
    path = find_config(path_or_name)
    flat = _flat_keys(OmegaConf.to_container(OmegaConf.load(path), resolve=False))
    lines = [f"config keys of {path.name} (override with key=value; dotted for nested keys):"]
    for key, value in flat.items():
        if isinstance(value, dict) and key not in OPEN_MAPPINGS:
            continue
        kind = "float" if key in FLOAT_KEYS else _type_name(value)
        shown = value if not isinstance(value, (dict, list)) or len(str(value)) < 60 else f"{str(value)[:57]}..."
        lines.append(f"  {key} ({kind}) = {shown}")
    lines.append("optional keys (any config):")
    for key, (kind, default, text) in OPTIONAL_KEYS.items():
        lines.append(f"  {key} ({kind.__name__}) = {default}: {text}")
    return "\n".join(lines)


def setup_config(argv: Sequence[str], default_config: str = "ret_msrvtt.yaml") -> DictConfig:
    """``argv`` = [config.yaml, key=value, ...] -> merged config (the original's ``setup_config``).

    ``--help`` (anywhere) lists the keys of the given config, else of ``default_config``.
    """
    argv = list(argv)
    if any(a in ("-h", "--help") for a in argv):
        given = [a for a in argv if not a.startswith("-") and "=" not in a]
        configs = ", ".join(sorted(p.name for p in CONFIG_DIR.glob("*.yaml")))
        print(f"{USAGE}\nbundled configs: {configs}\n{describe_keys(given[0] if given else default_config)}\n"
              "keys explained in singularity/README.md, 'Config keys'")
        raise SystemExit(0)
    if not argv:
        raise SystemExit(USAGE)
    return load_config(argv[0], argv[1:])


def to_container(config: DictConfig) -> dict:
    """Plain resolved dict (what checkpoints store instead of a pickled DictConfig, pitfall 9.21 F)."""
    return OmegaConf.to_container(config, resolve=True)
