"""YAML config + ``key=value`` dotlist overrides (OmegaConf), as the original ``setup_config`` (spec 2.3)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from common.errors import InputError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
USAGE = ("usage: python tasks/<task>.py CONFIG.yaml [key=value ...]  (OmegaConf dotlist: a.b=1, key=[x,y], "
         "x=None)")


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


def parse_overrides(tokens: Sequence[str]) -> list[str]:
    """Dotlist tokens; ``--local_rank=N`` (torch.distributed.launch) is dropped, other ``--x`` refused."""
    kept = []
    for token in tokens:
        if token.startswith("--local_rank") or token.startswith("--local-rank"):
            continue  # LOCAL_RANK is read from the environment (pitfall 9.16 F)
        if token.startswith("-") or "=" not in token:
            raise InputError("command line", f"cannot parse {token!r}: {USAGE}")
        kept.append(token)
    return kept


def load_config(path_or_name: str, overrides: Sequence[str] = (), require_env: bool = True) -> DictConfig:
    """Merge the YAML with the dotlist; ``None`` strings converted; env interpolations checked."""
    path = find_config(path_or_name)
    try:
        config = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(list(parse_overrides(overrides))))
    except Exception as err:  # omegaconf raises many types for malformed YAML / dotlists
        raise InputError(path, f"cannot load config: {err}") from None
    if require_env and "SL_DATA_DIR" in OmegaConf.to_yaml(config) and "SL_DATA_DIR" not in os.environ:
        raise InputError(path, "environment variable SL_DATA_DIR is not set (export SL_DATA_DIR=<data root>, "
                               "see README 'Data layout')", field="data_root")
    if not require_env:
        os.environ.setdefault("SL_DATA_DIR", "SL_DATA_DIR_UNSET")
    convert_types(config)
    if config.get("debug"):
        config.wandb.enable = False
    if config.get("evaluate"):
        if "wandb" in config:
            config.wandb.enable = False
        if config.get("output_dir") is None and config.get("pretrained_path"):
            config.output_dir = str(Path(config.pretrained_path).parent / "eval")
    return config


def setup_config(argv: Sequence[str]) -> DictConfig:
    """``argv`` = [config.yaml, key=value, ...] -> merged config (the original's ``setup_config``)."""
    argv = list(argv)
    if argv and argv[0] in ("-h", "--help"):
        configs = ", ".join(sorted(p.name for p in CONFIG_DIR.glob("*.yaml")))
        print(f"{USAGE}\nbundled configs (keys explained in singularity/README.md, 'Config keys'): {configs}\n"
              "keys added to the original's: vit_config allow_partial trust_checkpoint bf16 num_decoder_layers "
              "video_input.cache_decoded eval_after_training")
        raise SystemExit(0)
    if not argv:
        raise SystemExit(USAGE)
    return load_config(argv[0], argv[1:])


def to_container(config: DictConfig) -> dict:
    """Plain resolved dict (what checkpoints store instead of a pickled DictConfig, pitfall 9.21 F)."""
    return OmegaConf.to_container(config, resolve=True)
