"""Original (transformers 2.4.1 ``GPT2VisionAttentiveLMHead``) state dict -> this implementation, and a key check.

The layouts share every parameter name; the original additionally saved the causal-mask buffers
``transformer.h.N.attn.bias`` (and later versions ``attn.masked_bias``), which transformers 5.x no longer has.
``lm_head.weight`` is tied to ``transformer.wte.weight`` in both.

    python -m visualcomet.convert --check-keys tests/fixtures/visualcomet_state_dict_keys.txt
    python -m visualcomet.convert --to_safetensors experiments/image-inference-80000-ckpt out_dir

``--to_safetensors SRC DST`` (alias ``--src SRC --dst DST``) reads the released ``pytorch_model.bin`` once with the
restricted loader and writes DST = config.json + model.safetensors + README.md model card (+ the tokenizer files when
SRC's directory has them); ``VisualCometLMHead.from_pretrained(DST)`` then loads it without any pickle.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from common.checkpoint import compare_keys, load_checkpoint_file, load_state_dict_strict, remap_keys
from common.errors import InputError, run_cli
from common.safe_pickle import add_trust_flag
from common.threads import add_num_threads_flag, apply_num_threads

DEFAULT_KEYS_FILE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "visualcomet_state_dict_keys.txt"
DROPPED = (r"^transformer\.h\.\d+\.attn\.bias$", r"^transformer\.h\.\d+\.attn\.masked_bias$")


def read_weights(path: str | Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """Flat name -> tensor dict from a pytorch_model.bin / .safetensors (or a wrapped {'state_dict': ...})."""
    obj = load_checkpoint_file(path, trust=trust)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(path, "expected a flat state dict of tensors")
    return dict(obj)


def convert_state_dict(state_dict: dict[str, Any], config: Any = None) -> dict[str, Any]:
    """Drop the causal-mask buffers, strip a DataParallel ``module.`` prefix and restore a missing tied lm_head."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = remap_keys(state_dict, strip_prefix="module.")
    out = remap_keys(state_dict, drop=DROPPED)
    if "lm_head.weight" not in out and "transformer.wte.weight" in out:
        out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def parse_key_file(path: str | Path) -> list[dict[str, tuple[int, ...]]]:
    """Sections of a ``name<TAB>[shape]`` key file (separated by blank lines or '## ' headers)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "key file not found")
    sections: list[dict[str, tuple[int, ...]]] = [{}]
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("## ") or line.startswith("[section"):
            if sections[-1]:
                sections.append({})
            continue
        if line.startswith("#"):
            continue
        m = re.fullmatch(r"(\S+)\s+\[([\d,\s]*)\]", line.strip())
        if m is None:
            raise InputError(path, "expected 'name<TAB>[d1, d2, ...]'", record=lineno)
        sections[-1][m.group(1)] = tuple(int(d) for d in m.group(2).split(",") if d.strip())
    return [s for s in sections if s]


def variant_sections(keys: dict[str, tuple[int, ...]]) -> dict[str, dict[str, tuple[int, ...]]]:
    """The default section plus the two variants documented in the key file header (--use_bbox, --no_subject_ids)."""
    n_embd = keys["transformer.wte.weight"][1]
    bbox = {}
    for k, v in keys.items():
        bbox[k] = v
        if k == "transformer.detector.obj_downsample.1.bias":
            bbox["transformer.detector.bbox_upsample.1.weight"] = (n_embd, 4)
            bbox["transformer.detector.bbox_upsample.1.bias"] = (n_embd,)
    no_subj = {k: v for k, v in keys.items() if k != "transformer.subject_embed.weight"}
    return {"default": keys, "use_bbox": bbox, "no_subject_ids": no_subj}


def config_for_keys(keys: dict[str, tuple[int, ...]]) -> Any:
    """The model config an original-layout key set implies (layer count, widths, vocab, feature dim, variants)."""
    from visualcomet.model import make_config

    vocab, n_embd = keys["transformer.wte.weight"]
    n_layer = 1 + max(int(m.group(1)) for k in keys if (m := re.match(r"transformer\.h\.(\d+)\.", k)))
    head_dim = 64 if n_embd % 64 == 0 else n_embd
    return make_config(vocab_size=vocab, n_layer=n_layer, n_head=max(1, n_embd // head_dim), n_embd=n_embd,
                       n_positions=keys["transformer.wpe.weight"][0],
                       feature_dim=keys["transformer.detector.obj_downsample.1.weight"][1],
                       use_subject_ids="transformer.subject_embed.weight" in keys,
                       use_bbox="transformer.detector.bbox_upsample.1.weight" in keys)


def check_keys(keys: dict[str, tuple[int, ...]]) -> tuple[int, int]:
    """Build the model on the meta device, convert a synthetic original state dict and load it strictly."""
    from visualcomet.model import VisualCometLMHead

    config = config_for_keys(keys)
    with torch.device("meta"):
        model = VisualCometLMHead(config)
        original = {k: torch.empty(shape) for k, shape in keys.items()}
    converted = convert_state_dict(original, config)
    report = load_state_dict_strict(model, converted, strict=True, source="converted key file")
    # Every original key must be accounted for: loaded, or one of the documented dropped buffers.
    dropped = [k for k in keys if any(re.match(p, k) for p in DROPPED)]
    accounted = compare_keys({k: v.shape for k, v in model.state_dict().items()}, converted)
    if accounted.loaded + len(dropped) != len(keys):
        raise InputError("key file", f"{len(keys) - accounted.loaded - len(dropped)} keys neither loaded nor dropped")
    return report.loaded + len(dropped), len(keys)


def convert_file(src: str | Path, dst: str | Path, trust: bool = False) -> Path:
    """Convert a released pytorch_model.bin (with its directory's config) into ``dst`` via save_pretrained.

    ``dst`` must not hold a model already (nothing written there is replaced); it is created only once the source
    has been read and loaded strictly.
    """
    from visualcomet.model import VisualCometLMHead, load_config, save_pretrained
    from visualcomet.tokenization import VisualCometTokenizer

    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise InputError(src, "not found (give the released checkpoint directory or its pytorch_model.bin)")
    taken = [f for f in ("config.json", "model.safetensors", "pytorch_model.bin") if (dst / f).exists()]
    if taken:
        raise InputError(dst / taken[0], "exists: choose an empty output directory")
    directory = src if src.is_dir() else src.parent
    weights = src if src.is_file() else directory / "pytorch_model.bin"
    config = load_config(directory)
    model = VisualCometLMHead(config)
    load_state_dict_strict(model, convert_state_dict(read_weights(weights, trust), config), source=weights)
    tokenizer = VisualCometTokenizer.from_pretrained(directory) if (directory / "vocab.json").is_file() else None
    return save_pretrained(model, dst, tokenizer)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: --check-keys FILE, or --src/--dst conversion."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check-keys", nargs="?", const=str(DEFAULT_KEYS_FILE), default=None, metavar="FILE",
                        help="key file (name<TAB>[shape] lines) of the original checkpoint; checks every section and "
                             "the documented --use_bbox / --no_subject_ids variants")
    parser.add_argument("--to_safetensors", nargs=2, metavar=("SRC", "DST"), default=None,
                        help="released checkpoint directory (or its pytorch_model.bin) -> DST with config.json, "
                             "model.safetensors and a README.md model card")
    parser.add_argument("--src", help="same as the first --to_safetensors argument")
    parser.add_argument("--dst", help="same as the second --to_safetensors argument")
    add_trust_flag(parser)
    add_num_threads_flag(parser)
    args = parser.parse_args(argv)
    apply_num_threads(args.num_threads)
    if args.to_safetensors:
        args.src, args.dst = args.to_safetensors
    if args.check_keys is None and not (args.src and args.dst):
        parser.error("give --check-keys FILE, --to_safetensors SRC DST, or both --src and --dst")
    if args.check_keys is not None:
        failed = False
        for i, section in enumerate(parse_key_file(args.check_keys)):
            for name, keys in variant_sections(section).items():
                try:
                    loaded, total = check_keys(keys)
                except InputError as err:
                    print(f"section {i} ({name}): FAILED {err}")
                    failed = True
                    continue
                print(f"section {i} ({name}): loaded {loaded}/{total} keys")
        return 1 if failed else 0
    out = convert_file(args.src, args.dst, args.trust_checkpoint)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
