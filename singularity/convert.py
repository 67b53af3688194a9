"""Original Singularity state dicts (transformers 4.15 BEiT names, xbert) -> this implementation (spec 6).

``python -m singularity.convert --check-keys tests/fixtures/singularity_state_dict_keys.txt`` builds every model
of the key file at the original default configuration on the meta device, synthesises an original-layout state
dict from the listed shapes, converts it and loads it strictly.
``python -m singularity.convert --input ORIG.pth --output NEW.pth --task retrieval`` converts a file.
``python -m singularity.convert --to_safetensors ORIG.pth DIR --task retrieval`` writes the publishable layout
(``config.json`` + ``model.safetensors`` + ``README.md``) that ``<Model>.from_pretrained(DIR)`` reads without pickle.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the monorepo importable (absolute imports only)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from common.checkpoint import atomic_torch_save, compare_keys, extract_state_dict, load_checkpoint_file
from common.errors import InputError, run_cli
from common.safe_pickle import add_trust_flag
from common.threads import add_num_threads_flag, apply_num_threads
from singularity.models.build import build_model_for_task

DEFAULT_KEY_FILE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "singularity_state_dict_keys.txt"

# transformers 4.15 BEiT layer names -> transformers 5.x (spec 6.4)
_BEIT_RENAMES = [
    (r"attention\.attention\.query\.", "attention.q_proj."),
    (r"attention\.attention\.key\.", "attention.k_proj."),
    (r"attention\.attention\.value\.", "attention.v_proj."),
    (r"attention\.output\.dense\.", "attention.o_proj."),
    (r"attention\.attention\.relative_position_bias\.", "relative_position_bias."),
    (r"intermediate\.dense\.", "mlp.fc1."),
    (r"^output\.dense\.", "mlp.fc2."),
]
_LAYER_RE = re.compile(r"^vision_encoder\.encoder\.layer\.(\d+)\.(.*)$")
_DROP_RE = re.compile(r"(relative_position_index$|\.position_ids$)")
# modules the original task models delete / never have (spec 4.1): dropped when the target lacks them
_QA_DROPPED = ("vision_proj.", "text_proj.", "itm_head.", "temp", "vision_encoder.pooler.")


def rename_beit_key(key: str) -> str:
    """``vision_encoder.encoder.layer.N.X`` (4.15) -> ``vision_encoder.layers.N.Y`` (5.x); others unchanged."""
    match = _LAYER_RE.match(key)
    if not match:
        return key
    layer, rest = match.groups()
    for pattern, repl in _BEIT_RENAMES:
        rest = re.sub(pattern, repl, rest)
    return f"vision_encoder.layers.{layer}.{rest}"


def resize_temporal(embed: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Zero-pad or truncate temporal embeddings to ``num_frames`` (spec 4.5, used for 1-frame -> 4-frame)."""
    old = embed.shape[1]
    if num_frames == old:
        return embed
    if num_frames < old:
        return embed[:, :num_frames].clone()
    out = torch.zeros((embed.shape[0], num_frames, *embed.shape[2:]), dtype=embed.dtype, device=embed.device)
    if not out.is_meta:
        out[:, :old] = embed
    return out


def geometric_offsets(src_size: int, dst_size: int) -> tuple[list[float], list[float]]:
    """(source positions, target positions) of BEiT's relative-position resampling (spec pitfall 9.19).

    The original (unilm BEiT ``run_class_finetuning.py``, copied into Singularity's ``models/utils.py``) places
    the ``src_size`` source offsets on a geometric progression with ratio q found by bisection in [1.01, 1.5]
    so that its half-width reaches ``dst_size // 2``: offset 1 stays at 1, longer ones are stretched. The
    targets are the integer offsets ``-dst_size//2 .. dst_size//2``.
    """
    def geometric_sum(a: float, r: float, n: int) -> float:
        return a * (1.0 - r ** n) / (1.0 - r)

    left, right = 1.01, 1.5
    while right - left > 1e-6:
        q = (left + right) / 2.0
        if geometric_sum(1, q, src_size // 2) > dst_size // 2:
            right = q
        else:
            left = q
    dis, cur = [], 1.0
    for i in range(src_size // 2):
        dis.append(cur)
        cur += q ** (i + 1)
    source = [-d for d in reversed(dis)] + [0.0] + dis
    t = dst_size // 2.0
    target = np.arange(-t, t + 0.1, 1.0).tolist()
    return source, target


def resample_rel_pos_table(table: torch.Tensor, rows: int) -> torch.Tensor:
    """Resample a BEiT relative-position table ((2W-1)^2 + 3, heads) to ``rows`` rows as the original does.

    Per head, the (2W-1)x(2W-1) offset grid sits at the geometric positions of ``geometric_offsets`` and is
    resampled at the integer target offsets with a bicubic interpolating spline: the original's
    ``scipy.interpolate.interp2d(x, y, z, kind='cubic')`` (removed in SciPy 1.14, pitfall 9.19 F) fits FITPACK's
    ``regrid_smth(x, y, z.T, s=0)`` and evaluates ``bispev(dx, dy).T``; ``RectBivariateSpline`` runs the same
    two FITPACK routines on the same arrays, so the result is the original's. The 3 CLS rows are kept.
    """
    if table.shape[0] == rows:
        return table
    extra = 3
    src, dst = round((table.shape[0] - extra) ** 0.5), round((rows - extra) ** 0.5)
    if src * src + extra != table.shape[0] or dst * dst + extra != rows:
        raise ValueError(f"relative-position tables have (2W-1)^2 + 3 rows, got {table.shape[0]} -> {rows}")
    if table.is_meta:
        return torch.empty((rows, table.shape[1]), device="meta", dtype=table.dtype)
    from scipy.interpolate import RectBivariateSpline

    x, dx = geometric_offsets(src, dst)
    heads = []
    for h in range(table.shape[1]):
        z = table[:-extra, h].detach().view(src, src).float().cpu().numpy()
        spline = RectBivariateSpline(x, x, z.T, kx=3, ky=3, s=0)
        heads.append(torch.tensor(spline(dx, dx).T, dtype=torch.float32).contiguous().view(-1, 1))
    resampled = torch.cat(heads, dim=-1).to(table.dtype)
    return torch.cat([resampled, table[-extra:]], dim=0)


class TableSizeError(ValueError):
    """A learned table (temporal embeddings, relative-position bias) whose size differs from the model's."""


def fit_learned_tables(state_dict: dict[str, torch.Tensor], target_shapes: Mapping[str, Sequence[int]],
                       allow_resize: bool = False) -> list[str]:
    """Resize learned tables of ``state_dict`` (in place) to ``target_shapes``; returns one note per resize.

    Relative-position tables are resampled as the original (``resample_rel_pos_table``), temporal embeddings
    zero-padded / truncated (spec 4.5). A temporal table of zeros holds nothing learned (the original's 1-frame
    models never train it) and is padded freely; any other resize needs ``allow_resize``
    (``resize_learned_tables=True``), else ``TableSizeError`` (pitfall 9.2 F: no silent truncation).
    """
    notes = []
    for key in list(state_dict):
        if key not in target_shapes:
            continue
        value, shape = state_dict[key], tuple(target_shapes[key])
        if tuple(value.shape) == shape:
            continue
        if key.endswith("relative_position_bias_table") and value.dim() == 2 and len(shape) == 2:
            what = (f"{key}: {value.shape[0]} -> {shape[0]} rows (image_res differs from the checkpoint's; "
                    "geometric-offset bicubic resampling as the original)")
            if not allow_resize:
                raise TableSizeError(what)
            state_dict[key] = resample_rel_pos_table(value, int(shape[0]))
            notes.append(what)
        elif key == "temporal_embeddings" and value.dim() == 4 and len(shape) == 4:
            old, new = int(value.shape[1]), int(shape[1])
            learned = not value.is_meta and bool(value.detach().abs().sum() > 0)
            verb = "zero-padded" if new > old else "truncated"
            what = f"temporal_embeddings: {old} -> {new} frames ({verb}{'' if learned else ', table all zeros'})"
            if learned and not allow_resize:
                raise TableSizeError(what)
            state_dict[key] = resize_temporal(value, new)
            notes.append(what)
    return notes


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], target_keys: Sequence[str],
                       fusion_layer: int = 9) -> dict[str, torch.Tensor]:
    """Rename an original (or already converted) state dict for a model whose keys are ``target_keys``.

    Applies, by key presence and in every mode (pitfall 9.1 F): BEiT 4.15 -> 5.x names; buffers dropped;
    ``text_encoder.bert.`` stripped for retrieval/QA targets; QA decoder layers built from text-encoder
    layers >= ``fusion_layer`` (spec 6.3 rule 4); temporal embeddings padded/truncated; the heads the
    original QA model deletes dropped.
    """
    targets = set(target_keys)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if _DROP_RE.search(key):
            continue
        out[rename_beit_key(key)] = value
    source_is_pretrain = any(k.startswith("text_encoder.bert.") for k in out)
    target_is_pretrain = any(k.startswith("text_encoder.bert.") for k in targets)
    target_has_decoder = any(k.startswith("text_decoder.") for k in targets)
    source_has_decoder = any(k.startswith("text_decoder.") for k in out)
    if target_has_decoder and not source_has_decoder:
        for key, value in list(out.items()):
            if not key.startswith("text_encoder."):
                continue
            rest = key[len("text_encoder."):]
            if rest.startswith("bert."):
                rest = rest[len("bert."):]
            match = re.match(r"encoder\.layer\.(\d+)\.(.*)$", rest)
            if match:
                layer = int(match.group(1))
                if layer >= fusion_layer:
                    out[f"text_decoder.bert.encoder.layer.{layer - fusion_layer}.{match.group(2)}"] = value
            elif rest.startswith("cls."):
                out[f"text_decoder.{rest}"] = value
            else:
                out[f"text_decoder.bert.{rest}"] = value
    if source_is_pretrain and not target_is_pretrain:
        out = {("text_encoder." + k[len("text_encoder.bert."):] if k.startswith("text_encoder.bert.") else k): v
               for k, v in out.items() if not k.startswith("text_encoder.cls.")}
    elif target_is_pretrain and not source_is_pretrain:
        out = {("text_encoder.bert." + k[len("text_encoder."):] if k.startswith("text_encoder.") else k): v
               for k, v in out.items()}
    if target_has_decoder:
        out = {k: v for k, v in out.items() if not (k.startswith(_QA_DROPPED) and k not in targets)}
    return out


def infer_architecture(state_dict: Mapping[str, torch.Tensor]) -> dict[str, object]:
    """Config overrides implied by a checkpoint's keys (temporal encoder depth, frames; pitfall 9.2 F)."""
    keys = [k[len("module."):] if k.startswith("module.") else k for k in state_dict]
    layers = {int(m.group(1)) for k in keys if (m := re.match(r"temporal_vision_encoder\.layer\.(\d+)\.", k))}
    found: dict[str, object] = {}
    if layers:
        found["temporal_vision_encoder.enable"] = True
        found["temporal_vision_encoder.num_layers"] = max(layers) + 1
        found["add_temporal_embed"] = True
    embed = state_dict.get("temporal_embeddings", state_dict.get("module.temporal_embeddings"))
    if embed is not None:
        if embed.shape[1] > 1:
            found["add_temporal_embed"] = True
            found["video_input.num_frames"] = int(embed.shape[1])
        elif not embed.is_meta and bool(embed.detach().abs().sum() > 0):
            found["add_temporal_embed"] = True
    return found


# ------------------------------------------------------------------------------------------------
# key-file check
# ------------------------------------------------------------------------------------------------

def read_key_file(path: str | Path) -> list[dict]:
    """Sections of ``singularity_state_dict_keys.txt``: name, class, config, overrides, {key: shape}."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "key file not found")
    sections: list[dict] = []
    current = None
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("# SECTION "):
            current = {"name": line[len("# SECTION "):].strip(), "keys": {}, "class": None, "config": None,
                       "overrides": []}
            sections.append(current)
        elif line.startswith("# class=") and current is not None:
            match = re.match(r"# class=(\S+) config=(\S+) overrides=(.*)$", line)
            if not match:
                raise InputError(path, "cannot parse the class/config line", record=lineno)
            current["class"], current["config"] = match.group(1), match.group(2)
            current["overrides"] = ast.literal_eval(match.group(3))
        elif line.strip() and not line.startswith("#"):
            if current is None:
                raise InputError(path, "key line before the first '# SECTION'", record=lineno)
            try:
                name, shape = line.split("\t")
                current["keys"][name] = tuple(ast.literal_eval(shape))
            except (ValueError, SyntaxError) as err:
                raise InputError(path, f"expected 'name<TAB>shape' ({err})", record=lineno) from None
    if not sections:
        raise InputError(path, "no '# SECTION' found")
    return sections


def build_model_for_section(section: dict, device: str = "meta") -> torch.nn.Module:
    """The model class of a key-file section at the original default config, on ``device``."""
    from singularity.config import load_config

    config_name = Path(section["config"]).name
    config = load_config(config_name, list(section["overrides"]), require_env=False)
    task = {"model_pretrain": "pretrain", "model_retrieval": "retrieval", "model_vqa": "vqa"}[
        section["class"].split(".")[1]]
    with torch.device(device):
        return build_model_for_task(task, config)


def check_section(section: dict) -> tuple[str, bool]:
    """Convert a synthetic original-layout state dict of ``section`` and compare with our model's keys."""
    model = build_model_for_section(section)
    model_sd = model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in model_sd.items()}
    original = {k: torch.empty(shape, device="meta") for k, shape in section["keys"].items()}
    fusion = getattr(getattr(model, "bert_config", None), "fusion_layer", 9)
    converted = convert_state_dict(original, list(shapes), fusion_layer=fusion)
    report = compare_keys(shapes, converted)
    dropped = sum(1 for k in section["keys"] if _DROP_RE.search(k))
    line = (f"{section['name']}: {report.summary()} ({len(section['keys'])} original entries, "
            f"{dropped} buffers dropped)")
    if report.ok:
        model.load_state_dict(converted, strict=True, assign=True)
    else:
        line += "\n  " + report.details()
    return line, report.ok


def read_checkpoint(path: str | Path, trust: bool = False, field: str = "pretrained_path") -> tuple[dict, dict]:
    """(full checkpoint dict, model state dict) of ``path``, checked: only ``model`` is required (spec 6.1).

    Pickles are read with the restricted unpickler (the authors' pickled OmegaConf ``config`` arrives as a
    plain dict, pitfall 9.21 F); full unpickling only with ``trust``. A file without a state dict, an empty
    one, or one with non-finite weights is refused with the offending key.
    """
    if not Path(path).is_file():
        raise InputError(path, "checkpoint file not found", field=field)
    obj = load_checkpoint_file(path, trust=trust)
    try:
        state = extract_state_dict(obj)
    except ValueError as err:
        raise InputError(path, f"no model state dict in the checkpoint ({err})", field="model") from None
    if not state:
        raise InputError(path, "the model state dict is empty", field="model")
    for key, value in state.items():
        if value.is_floating_point() and not value.is_meta and not bool(torch.isfinite(value).all()):
            raise InputError(path, "holds NaN or infinite values", field=f"model.{key}")
    return (obj if isinstance(obj, dict) else {}), state


def convert_file(input_path: str, output_path: str, task: str, overrides: list[str], trust: bool) -> str:
    """Convert one original checkpoint file to this layout (``{"model": ...}``) for ``task``."""
    from singularity.config import load_config
    from singularity.models.config_paths import cfg_get

    out = Path(output_path)
    if out.exists():
        raise InputError(out, "output exists; refusing to overwrite")
    _, state = read_checkpoint(input_path, trust=trust, field="--input")
    arch = infer_architecture(state)
    config_name = {"pretrain": "pretrain.yaml", "retrieval": "ret_msrvtt.yaml", "vqa": "qa_msrvtt.yaml"}[task]
    config = load_config(config_name, [f"{k}={v}" for k, v in arch.items()] + list(overrides), require_env=False)
    with torch.device("meta"):
        model = build_model_for_task(task, config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    converted = convert_state_dict(state, list(shapes), fusion_layer=model.bert_config.fusion_layer)
    try:
        notes = fit_learned_tables(converted, shapes, bool(cfg_get(config, "resize_learned_tables", False)))
    except TableSizeError as err:
        raise InputError(input_path, f"{err}; pass resize_learned_tables=True to resize it",
                         field="resize_learned_tables") from None
    report = compare_keys(shapes, converted)
    if not report.ok:
        raise InputError(input_path, f"{report.summary()}: {report.details()}")
    atomic_torch_save({"model": converted, "config": {"inferred": dict(arch), "resized": notes}}, out)
    return report.summary() + (f"; resized learned tables: {'; '.join(notes)}" if notes else "")


def to_safetensors(src: str, dst: str, task: str, overrides: list[str], trust: bool,
                   metrics_file: str | None = None) -> str:
    """An authors' (or this code's) ``.pth`` -> a ``save_pretrained`` directory, read once with the restricted
    unpickler; later loads (``from_pretrained``) read safetensors and JSON only."""
    from singularity.config import load_config
    from singularity.models.config_paths import cfg_get
    from singularity.tasks_common import load_pretrained

    out = Path(dst)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "exists and is not an empty directory; refusing to overwrite", field="DST")
    _, state = read_checkpoint(src, trust=trust, field="SRC")
    arch = infer_architecture(state)
    config_name = {"pretrain": "pretrain.yaml", "retrieval": "ret_msrvtt.yaml", "vqa": "qa_msrvtt.yaml"}[task]
    config = load_config(config_name, [f"{k}={v}" for k, v in arch.items()] + list(overrides), require_env=False)
    model = build_model_for_task(task, config)
    report = load_pretrained(model, state, allow_partial=False, source=str(src),
                             resize_tables=bool(cfg_get(config, "resize_learned_tables", False)))
    model.save_pretrained(out, metrics_file=metrics_file)
    return f"{report.summary()}; wrote {out}/config.json, model.safetensors, README.md"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``--check-keys FILE`` or ``--input/--output/--task``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check-keys", nargs="?", const=str(DEFAULT_KEY_FILE), default=None, metavar="FILE",
                        help="key file (name<TAB>shape per line, '# SECTION' headers); default: tests/fixtures copy")
    parser.add_argument("--section", action="append", default=None,
                        help="only check these sections (repeatable); default: all")
    parser.add_argument("--input", help="original checkpoint (.pth with a 'model' entry) to convert")
    parser.add_argument("--output", help="where to write the converted {'model': state_dict}")
    parser.add_argument("--task", choices=["pretrain", "retrieval", "vqa"], default="retrieval",
                        help="model the converted file is for (default: retrieval)")
    parser.add_argument("--to_safetensors", nargs=2, metavar=("SRC", "DST"),
                        help="convert checkpoint SRC (read with the restricted unpickler) into the publishable "
                             "directory DST: config.json + model.safetensors + README.md model card "
                             "(load it with <Model>.from_pretrained(DST); --task picks the model)")
    parser.add_argument("--metrics_file", default=None,
                        help="with --to_safetensors: a results JSON of the run (eval_res_best.json, ...) whose "
                             "numbers go into the model card")
    add_trust_flag(parser)
    add_num_threads_flag(parser)
    parser.add_argument("overrides", nargs="*",
                        help="config key=value overrides for the target model (e.g. image_res=384 "
                             "resize_learned_tables=True)")
    args = parser.parse_args(argv)
    apply_num_threads(args.num_threads)
    if args.to_safetensors:
        print(to_safetensors(*args.to_safetensors, args.task, args.overrides, args.trust_checkpoint,
                             args.metrics_file))
        return 0
    if args.check_keys:
        sections = read_key_file(args.check_keys)
        if args.section:
            sections = [s for s in sections if s["name"] in args.section]
        ok = True
        for section in sections:
            line, good = check_section(section)
            print(line)
            ok &= good
        return 0 if ok else 1
    if not (args.input and args.output):
        parser.error("give --check-keys FILE, --to_safetensors SRC DST, or --input and --output")
    print(convert_file(args.input, args.output, args.task, args.overrides, args.trust_checkpoint))
    return 0


if __name__ == "__main__":
    run_cli(main)
