"""Original CLIP4IDC / OpenAI CLIP state-dict layout <-> this implementation (spec 6).

`python -m clip4idc.convert --check-keys FILE` builds the model at the original default configuration
on the meta device, synthesises an original-layout state dict from the key file's shapes, converts it
and loads it strictly, for the retrieval stage (the 307 `clip.*` keys) and the caption stage (443).
`python -m clip4idc.convert --input pytorch_model.bin.clevr --output model.safetensors` converts a file.
`python -m clip4idc.convert --to_safetensors pytorch_model.bin.clevr DIR` writes the publishable layout
(config.json + model.safetensors + README.md model card) that `CLIP4IDC.from_pretrained(DIR)` and
`clip4idc.predict --init_model DIR` read without unpickling anything.
"""
from __future__ import annotations

import argparse
import re
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import save as save_safetensors

from common.checkpoint import (KeyReport, atomic_torch_save, atomic_write_bytes, extract_state_dict,
                               load_checkpoint_file, load_state_dict_strict)
from common.errors import InputError, run_cli
from common.safe_pickle import CheckpointReadError, UnsafePickleError, add_trust_flag
from common.threads import add_num_threads_flag, apply_num_threads

DEFAULT_KEY_FILE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "clip4idc_state_dict_keys.txt"
# Original names that are the same tensor as another entry (spec 6): dropped on load, re-created on export.
TIED = {
    "decoder.embeddings.word_embeddings.weight": "clip.token_embedding.weight",
    "decoder.classifier.cls.predictions.decoder.weight": "clip.token_embedding.weight",
    "decoder.embeddings.position_embeddings.weight": "clip.positional_embedding",
}
# OpenAI checkpoint scalars that are not parameters (always "unexpected" in the original).
OPENAI_EXTRA = ("input_resolution", "context_length", "vocab_size")
TRANSPOSED = {"clip.text_projection": "clip.text.text_projection.weight", "clip.visual.proj": "clip.visual.proj.weight"}
# (original regex, new name) applied to clip.* / decoder.* names, first match wins.
RENAMES = [
    (r"clip\.positional_embedding$", "clip.text.embeddings.position_embedding.weight"),
    (r"clip\.token_embedding\.weight$", "clip.text.embeddings.token_embedding.weight"),
    (r"clip\.ln_final\.", "clip.text.final_layer_norm."),
    (r"clip\.transformer\.resblocks\.", "clip.text.layers."),
    (r"clip\.visual\.class_embedding$", "clip.visual.embeddings.class_embedding"),
    (r"clip\.visual\.positional_embedding$", "clip.visual.embeddings.position_embedding.weight"),
    (r"clip\.visual\.conv1\.weight$", "clip.visual.embeddings.patch_embedding.weight"),
    (r"clip\.visual\.ln_pre\.", "clip.visual.pre_layrnorm."),
    (r"clip\.visual\.ln_post\.", "clip.visual.post_layernorm."),
    (r"clip\.visual\.transformer\.resblocks\.", "clip.visual.layers."),
    (r"decoder\.embeddings\.LayerNorm\.", "decoder.embeddings_norm."),
    (r"decoder\.encoder\.layer\.", "decoder.encoder_layers."),
    (r"decoder\.decoder\.layer\.", "decoder.decoder_layers."),
    (r"decoder\.classifier\.cls\.predictions\.bias$", "decoder.head_bias"),
    (r"decoder\.classifier\.cls\.predictions\.transform\.", "decoder.head_transform."),
]
BLOCK_RENAMES = [
    (r"\.attn\.out_proj\.", ".self_attn.out_proj."),
    (r"\.ln_1\.", ".layer_norm1."),
    (r"\.ln_2\.", ".layer_norm2."),
    (r"\.mlp\.c_fc\.", ".mlp.fc1."),
    (r"\.mlp\.c_proj\.", ".mlp.fc2."),
    (r"\.slf_attn\.att\.", ".attention.self."),
    (r"\.slf_attn\.output\.", ".attention.output."),
    (r"\.enc_attn\.att\.", ".crossattention.self."),
    (r"\.enc_attn\.output\.", ".crossattention.output."),
]


def _rename(name: str) -> str:
    for pattern, new in RENAMES:
        if re.match(pattern, name):
            name = re.sub(pattern, new, name, count=1)
            break
    if ".layers." in name or "_layers." in name:
        for pattern, new in BLOCK_RENAMES:
            name = re.sub(pattern, new, name)
    return name


def normalise_original(state_dict: dict) -> "OrderedDict[str, torch.Tensor]":
    """Original-layout dict cleaned as `init_preweight` does: `module.` stripped, gamma/beta renamed,
    OpenAI ViT-B-32.pt keys (no `clip.` prefix) prefixed, the three OpenAI scalars dropped."""
    out = OrderedDict()
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        key = key.replace("gamma", "weight").replace("beta", "bias")
        if key in OPENAI_EXTRA or key.startswith("clip.") and key[5:] in OPENAI_EXTRA:
            continue
        if not key.startswith(("clip.", "decoder.", "cross.")):
            key = "clip." + key
        out[key] = value
    return out


def original_to_new(state_dict: dict, check_ties: bool = True) -> "OrderedDict[str, torch.Tensor]":
    """Convert an original CLIP4IDC (or OpenAI CLIP) state dict to this implementation's names."""
    sd = normalise_original(state_dict)
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, value in sd.items():
        if key in TIED:
            source = sd.get(TIED[key])
            if source is None:
                out[_rename(TIED[key])] = value  # only the tied copy exists: use it
            elif check_ties and not value.is_meta and not source.is_meta and not torch.equal(value.float(), source.float()):
                raise ValueError(f"{key} should be tied to {TIED[key]} but differs")
            continue
        if key in TRANSPOSED:
            out[TRANSPOSED[key]] = value.t()
            continue
        if key.endswith(("attn.in_proj_weight", "attn.in_proj_bias")):
            base = _rename(key.rsplit(".attn.", 1)[0])
            kind = "weight" if key.endswith("weight") else "bias"
            for part, chunk in zip("qkv", value.chunk(3, dim=0)):
                out[f"{base}.self_attn.{part}_proj.{kind}"] = chunk
            continue
        out[_rename(key)] = value
    return out


INVERSE_PREFIXES = [
    ("clip.text.embeddings.position_embedding.weight", "clip.positional_embedding"),
    ("clip.text.embeddings.token_embedding.weight", "clip.token_embedding.weight"),
    ("clip.text.final_layer_norm.", "clip.ln_final."),
    ("clip.text.layers.", "clip.transformer.resblocks."),
    ("clip.visual.embeddings.class_embedding", "clip.visual.class_embedding"),
    ("clip.visual.embeddings.position_embedding.weight", "clip.visual.positional_embedding"),
    ("clip.visual.embeddings.patch_embedding.weight", "clip.visual.conv1.weight"),
    ("clip.visual.pre_layrnorm.", "clip.visual.ln_pre."),
    ("clip.visual.post_layernorm.", "clip.visual.ln_post."),
    ("clip.visual.layers.", "clip.visual.transformer.resblocks."),
    ("decoder.embeddings_norm.", "decoder.embeddings.LayerNorm."),
    ("decoder.encoder_layers.", "decoder.encoder.layer."),
    ("decoder.decoder_layers.", "decoder.decoder.layer."),
    ("decoder.head_bias", "decoder.classifier.cls.predictions.bias"),
    ("decoder.head_transform.", "decoder.classifier.cls.predictions.transform."),
]
INVERSE_BLOCK = [
    (".self_attn.out_proj.", ".attn.out_proj."), (".layer_norm1.", ".ln_1."), (".layer_norm2.", ".ln_2."),
    (".mlp.fc1.", ".mlp.c_fc."), (".mlp.fc2.", ".mlp.c_proj."), (".attention.self.", ".slf_attn.att."),
    (".attention.output.", ".slf_attn.output."), (".crossattention.self.", ".enc_attn.att."),
    (".crossattention.output.", ".enc_attn.output."),
]


def _original_name(new: str) -> str:
    name = new
    for prefix, old in INVERSE_PREFIXES:
        if name.startswith(prefix):
            name = old + name[len(prefix):]
            break
    for cur, old in INVERSE_BLOCK:
        name = name.replace(cur, old)
    return name


def new_to_original(state_dict: dict) -> "OrderedDict[str, torch.Tensor]":
    """Inverse of original_to_new: this implementation's state dict in the original layout (ties re-created)."""
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    inverse_transposed = {v: k for k, v in TRANSPOSED.items()}
    for key, value in state_dict.items():
        if key in inverse_transposed:
            out[inverse_transposed[key]] = value.t()
            continue
        m = re.match(r"(clip\.(?:text|visual)\.layers\.\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$", key)
        if m:
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
            continue
        out[_original_name(key)] = value
    for (base, kind), parts in qkv.items():
        out[f"{_original_name(base + '.')}attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    if any(k.startswith("decoder.") for k in out):
        for tied, source in TIED.items():
            out[tied] = out[source]
    return out


# --- reading files ------------------------------------------------------------------------------
def _read_torchscript(path: Path, trust: bool) -> "OrderedDict[str, torch.Tensor]":
    """Tensors of an OpenAI TorchScript archive (ViT-B-32.pt) through `torch.jit.load`.

    Its data.pkl is read by TorchScript's own C++ unpickler, which resolves no Python globals (a Python
    pickle gadget fails to load); the only code it runs is a TorchScript `__setstate__` from the archive's
    code/ directory, so an archive that defines one is refused unless `trust` (OpenAI's files have none)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise CheckpointReadError(path, f"corrupt TorchScript archive (member {bad} fails its CRC)")
            if not trust:
                for name in archive.namelist():
                    if name.endswith(".py") and b"__setstate__" in archive.read(name):
                        raise UnsafePickleError(path, f"TorchScript archive defines __setstate__ ({name}), code that "
                                                      "loading would run; pass --trust_checkpoint only if you trust "
                                                      "the file's origin")
        return OrderedDict(torch.jit.load(str(path), map_location="cpu").state_dict())
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise CheckpointReadError(path, f"truncated or corrupt TorchScript archive ({err})") from None
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointReadError(path, f"not a readable TorchScript archive ({first})") from None


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in n or n.startswith("code/") for n in archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def read_state_dict(path: str | Path, trust: bool = False) -> "OrderedDict[str, torch.Tensor]":
    """Tensors of a checkpoint file: an OpenAI TorchScript archive (ViT-B-32.pt), or whatever
    `common.checkpoint.load_checkpoint_file` reads (.safetensors; torch.save'd state dicts and resume files
    ({'model': ...}) through common.safe_pickle: weights-only, then an allow-list, full unpickling only
    with `trust`). An empty dict, a non-floating tensor or a NaN/inf value is an error."""
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path) and _is_torchscript(path):
        sd = _read_torchscript(path, trust)
    else:
        try:
            sd = OrderedDict(extract_state_dict(load_checkpoint_file(path, trust=trust), keys=("model", "state_dict")))
        except ValueError as err:
            raise CheckpointReadError(path, f"not a state dict of tensors ({err})") from None
    if not sd:
        raise CheckpointReadError(path, "holds no tensors")
    for key, value in sd.items():
        if key.rsplit(".", 1)[-1] in OPENAI_EXTRA or value.is_meta:
            continue
        if not value.is_floating_point():
            raise CheckpointReadError(path, f"{value.dtype} tensor where weights are floating point", field=key)
        if not bool(torch.isfinite(value).all()):
            raise CheckpointReadError(path, "holds NaN or infinite values", field=key)
    return sd


def is_original_layout(state_dict: dict) -> bool:
    """True for original CLIP4IDC / OpenAI CLIP names (e.g. `clip.visual.conv1.weight`, `visual.conv1.weight`)."""
    return any(k.endswith(("visual.conv1.weight", "attn.in_proj_weight", "token_embedding.weight")) and
               ".embeddings." not in k for k in state_dict)


def to_model_layout(state_dict: dict, source: str | Path | None = None) -> "OrderedDict[str, torch.Tensor]":
    """State dict in this implementation's names whatever layout it came in (ties of an original file that
    differ are an InputError naming `source`)."""
    if not is_original_layout(state_dict):
        return OrderedDict(state_dict)
    try:
        return original_to_new(state_dict)
    except ValueError as err:
        raise CheckpointReadError(source or "state dict", str(err)) from None


def read_model_state_dict(path: str | Path, trust: bool = False) -> "OrderedDict[str, torch.Tensor]":
    """`read_state_dict` converted to this implementation's names."""
    return to_model_layout(read_state_dict(path, trust=trust), source=path)


def load_into(model: torch.nn.Module, state_dict: dict, strict: bool = True, source: str = "state dict") -> KeyReport:
    """Convert (if needed) and load `state_dict` into `model`, casting dtypes (fp16 originals into fp32 models);
    strict raises on any missing, unexpected or shape-mismatched key."""
    sd = to_model_layout(state_dict, source=source)
    own = model.state_dict()
    cast = OrderedDict((k, v.to(own[k].dtype) if k in own else v) for k, v in sd.items())
    return load_state_dict_strict(model, cast, strict=strict, source=source)


def original_fp16_names(state_dict: dict) -> list[str]:
    """Original-layout names the original keeps in float16 (spec 5.6: CLIP's Conv/Linear/attention weights
    and biases and both projections; 195 at the default configuration)."""
    suffixes = ("attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
                "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias")
    exact = ("clip.visual.conv1.weight", "clip.visual.conv2.weight", "clip.visual.proj", "clip.text_projection")
    return [k for k in state_dict if k in exact or k.startswith("clip.") and k.endswith(suffixes)]


def to_original_precision(state_dict: dict) -> "OrderedDict[str, torch.Tensor]":
    """An original-layout state dict with the original's dtypes: `original_fp16_names` in float16, the rest
    float32 (what the original's pytorch_model.bin.* files hold)."""
    half = set(original_fp16_names(state_dict))
    return OrderedDict((k, v.half() if k in half else v.float() if v.is_floating_point() else v)
                       for k, v in state_dict.items())


def save_state_dict(state_dict: dict, path: str | Path) -> Path:
    """Write a state dict to `path` (.safetensors, else torch.save) through a temporary file and a rename."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return atomic_write_bytes(path, save_safetensors({k: v.contiguous().clone() for k, v in state_dict.items()}))
    return atomic_torch_save(OrderedDict(state_dict), path)


# --- the key-file check -------------------------------------------------------------------------
def _key_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")]


def read_key_file(path: str | Path) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """Sections of the key file: 'caption' (all entries) and 'retrieval' (the `clip.*` entries)."""
    entries = []
    for i, line in enumerate(_key_lines(Path(path))):
        name, _, shape = line.partition("\t")
        try:
            dims = tuple(int(d) for d in shape.strip().strip("[]").split(",") if d.strip())
        except ValueError:
            raise InputError(path, f"bad shape {shape!r}", record=i, field="shape") from None
        entries.append((name.strip(), dims))
    return {"retrieval": [e for e in entries if e[0].startswith("clip.")], "caption": entries}


def default_model(stage: str, device: str | torch.device = "meta"):
    """The model at the original default configuration (ViT-B/32, intra 9, decoder-base)."""
    from clip4idc.models import build_model, load_clip_config, load_decoder_config

    with torch.device(device):
        return build_model(load_clip_config("ViT-B/32", intra_layers=9),
                           load_decoder_config("decoder-base") if stage == "caption" else None, stage)


def check_keys(path: str | Path, sections: list[str] | None = None) -> bool:
    """Synthesise each section's original state dict on meta, convert, load strictly; print a line each."""
    ok = True
    for stage, entries in read_key_file(path).items():
        if sections and stage not in sections:
            continue
        model = default_model(stage)
        original = OrderedDict((name, torch.empty(shape, device="meta")) for name, shape in entries)
        exported = list(new_to_original(model.state_dict()))
        same_names = sorted(exported) == sorted(original)
        try:
            report = load_into(model, original, strict=True, source=f"{path} [{stage}]")
        except InputError as err:
            print(f"{stage}: FAILED: {err}")
            ok = False
            continue
        own = model.state_dict()
        loaded = sum(
            all(k in own and v.shape == own[k].shape for k, v in original_to_new({name: t}, check_ties=False).items())
            for name, t in original.items()
        )
        print(f"{stage}: loaded {loaded}/{len(entries)} keys "
              f"(into {report.total} model tensors: q/k/v split, tied copies shared)"
              + ("" if same_names else "; ERROR: exported names differ from the key file"))
        ok = ok and same_names and report.loaded == report.total and loaded == len(entries)
    return ok


def to_pretrained(src: str | Path, dst: str | Path, trust: bool = False, intra_layers: int | None = None,
                  decoder_model: str | None = None, metrics_file: str | Path | None = None) -> Path:
    """Write `src` (an original or this code's checkpoint, read with the restricted loader) as a save_pretrained
    directory `dst`. Sizes come from the clip4idc_config.json next to `src` when there is one, else from the
    tensors (intra layers: `intra_layers`, default 9; decoder: `decoder_model`, default decoder-base)."""
    from clip4idc.factory import infer_clip_config, read_config_sidecar
    from clip4idc.models import CLIP4IDC
    from clip4idc.models.config import ClipConfig, DecoderConfig, load_decoder_config

    dst = Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise InputError(dst, "exists and is not an empty directory; refusing to overwrite")
    sd = read_model_state_dict(src, trust=trust)
    stage = "caption" if any(k.startswith("decoder.") for k in sd) else "retrieval"
    side = read_config_sidecar(src)
    max_words = None
    try:
        if side is not None:
            clip_cfg = ClipConfig(**side["clip"])
            decoder_cfg = DecoderConfig(**side["decoder"]) if side.get("decoder") else None
            max_words = side.get("max_words")
        else:
            clip_cfg = infer_clip_config(sd, 9, "2d")
            decoder_cfg = None
    except KeyError as err:
        raise InputError(src, "not a CLIP4IDC state dict (tensor missing)", field=str(err.args[0])) from None
    except TypeError as err:
        raise InputError(side["_path"], f"sizes do not fit this code ({err})") from None
    if intra_layers is not None:
        clip_cfg.intra_layers = intra_layers
    if stage == "caption" and (decoder_model is not None or decoder_cfg is None):
        decoder_cfg = load_decoder_config(decoder_model or "decoder-base")
    model = CLIP4IDC(clip_cfg, decoder_cfg if stage == "caption" else None, stage)
    load_into(model, sd, strict=True, source=str(src))
    return model.save_pretrained(dst, metrics_file=metrics_file, max_words=max_words)


def main(argv=None) -> int:
    """CLI: --check-keys FILE, --input/--output conversion of a checkpoint, or --to_safetensors SRC DST."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check-keys", nargs="?", const=str(DEFAULT_KEY_FILE), default=None, metavar="FILE",
                        help="key file (name<TAB>shape); default: tests/fixtures/clip4idc_state_dict_keys.txt")
    parser.add_argument("--section", choices=["retrieval", "caption"], action="append",
                        help="check only this section (repeatable; default: all)")
    parser.add_argument("--input", help="checkpoint in the original layout (pytorch_model.bin.*) or OpenAI ViT-B-32.pt")
    parser.add_argument("--output", help="where to write the converted state dict (.safetensors or .bin)")
    parser.add_argument("--to-original", action="store_true", help="convert this implementation's layout back to the original")
    parser.add_argument("--original_precision", action="store_true",
                        help="with --to-original: store the 195 CLIP Conv/Linear/attention tensors in float16 and the "
                             "rest in float32, as the original's files (default: keep the input's dtypes)")
    parser.add_argument("--to_safetensors", nargs=2, metavar=("SRC", "DST"),
                        help="write checkpoint SRC as a save_pretrained directory DST (config.json, model.safetensors, "
                             "README.md model card), loadable with CLIP4IDC.from_pretrained without any pickle")
    parser.add_argument("--intra_num_hidden_layers", type=int, default=None,
                        help="with --to_safetensors and no clip4idc_config.json beside SRC: per-image blocks (default 9)")
    parser.add_argument("--decoder_model", default=None,
                        help="with --to_safetensors: decoder config of a caption checkpoint without clip4idc_config.json "
                             "(default decoder-base)")
    parser.add_argument("--metrics_file", default=None,
                        help="with --to_safetensors: the run's results JSON (eval_metrics.json or scores_ep_*.json) "
                             "whose scores go into the model card")
    add_num_threads_flag(parser)
    add_trust_flag(parser)
    args = parser.parse_args(argv)
    apply_num_threads(args.num_threads)
    if args.check_keys:
        return 0 if check_keys(args.check_keys, args.section) else 1
    if args.to_safetensors:
        src, dst = args.to_safetensors
        out = to_pretrained(src, dst, trust=args.trust_checkpoint, intra_layers=args.intra_num_hidden_layers,
                            decoder_model=args.decoder_model, metrics_file=args.metrics_file)
        print(f"wrote {out} (config.json, model.safetensors, README.md)")
        return 0
    if not (args.input and args.output):
        parser.error("give --check-keys FILE, --to_safetensors SRC DST, or --input and --output")
    if args.original_precision and not args.to_original:
        parser.error("--original_precision needs --to-original")
    out = Path(args.output)
    if out.exists():
        raise InputError(out, "exists; refusing to overwrite")
    sd = read_state_dict(args.input, trust=args.trust_checkpoint)
    converted = new_to_original(sd) if args.to_original else to_model_layout(sd, source=args.input)
    if args.original_precision:
        converted = to_original_precision(converted)
    save_state_dict(converted, out)
    print(f"wrote {len(converted)} tensors to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
