"""Issue 11 for CLIP4IDC: every bad input to a real CLI entry (main_task_caption / main_task_retrieval /
predict / convert / visualize, run in-process through common.errors.run_cli) ends with exit status 2 and
one line naming the file (and the field where there is one), runs no code from a crafted pickle, and
leaves what is already in the output directory byte-identical (a failed launch creates nothing)."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from common.errors import run_cli
from clip4idc.convert import main as convert_main
from clip4idc.convert import new_to_original
from clip4idc.factory import save_config_sidecar
from clip4idc.main_task_caption import main as caption_main
from clip4idc.main_task_retrieval import main as retrieval_main
from clip4idc.models import build_model, load_clip_config, load_decoder_config
from clip4idc.predict import main as predict_main
from clip4idc.visualize import main as visualize_main

from .conftest import TINY_FLAGS

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")  # TorchScript cases
DECODER_KEY = "decoder.decoder.layer.0.output.dense.weight"  # original-layout name of a decoder tensor


# --- crafted pickles ---------------------------------------------------------------------------------
class _System:
    """Unpickles as os.system(cmd) (a plain __reduce__ gadget)."""

    def __init__(self, cmd: str):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


class _NestedTorchLoad:
    """Unpickles as torch.storage._load_from_bytes(payload): a full torch.load of nested bytes."""

    def __init__(self, payload: bytes):
        self.payload = payload

    def __reduce__(self):
        return torch.storage._load_from_bytes, (self.payload,)


class _NumpyRunstring:
    """Unpickles as numpy.testing's runstring(code, {}), which exec()s a string."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        from numpy.testing._private.utils import runstring

        return runstring, (self.code, {})


def _gadget(kind: str, marker: Path):
    cmd = f"touch {marker}"
    if kind == "reduce":
        return _System(cmd)
    if kind == "nested":
        return _NestedTorchLoad(pickle.dumps(_System(cmd)))
    return _NumpyRunstring(f"import os; os.system({cmd!r})")


# --- fixtures ------------------------------------------------------------------------------------------
def _tiny_state(stage: str) -> "OrderedDict[str, torch.Tensor]":
    torch.manual_seed(0)
    decoder = load_decoder_config("decoder-tiny") if stage == "caption" else None
    return new_to_original(build_model(load_clip_config("tiny"), decoder, stage).state_dict())


def _clevr_copy(syn_root: Path, dest: Path) -> Path:
    """The synthetic CLEVR root with its own copy of images/ (the other folders linked)."""
    dest.mkdir()
    for name in os.listdir(syn_root / "clevr"):
        src = syn_root / "clevr" / name
        if name == "images":
            shutil.copytree(src, dest / name)
        elif src.is_dir():
            (dest / name).symlink_to(src)
        else:
            shutil.copy(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, syn_root):
    """Good tiny checkpoints (caption with its config sidecar, retrieval), data roots and two images."""
    root = tmp_path_factory.mktemp("c4i_bad")
    cap_dir = root / "cap"
    cap_dir.mkdir()
    cap_sd = _tiny_state("caption")
    torch.save(cap_sd, cap_dir / "pytorch_model.bin.0")
    model = build_model(load_clip_config("tiny"), load_decoder_config("decoder-tiny"), "caption")
    save_config_sidecar(cap_dir, model.clip.cfg, model.decoder.cfg, 10)
    torch.save(_tiny_state("retrieval"), root / "ret.bin")
    empty = root / "clevr_empty_test"  # the synthetic CLEVR root with an empty test split
    empty.mkdir()
    for name in os.listdir(syn_root / "clevr"):
        src = syn_root / "clevr" / name
        if src.is_dir():
            (empty / name).symlink_to(src)
        elif name != "splits.json":
            shutil.copy(src, empty / name)
    splits = json.loads((syn_root / "clevr" / "splits.json").read_text())
    (empty / "splits.json").write_text(json.dumps(dict(splits, test=[])))
    first_test = f"CLEVR_default_{splits['test'][0]:06d}.png"
    missing = _clevr_copy(syn_root, root / "clevr_missing_test_image")
    (missing / "images" / first_test).unlink()
    unreadable = _clevr_copy(syn_root, root / "clevr_unreadable_test_image")
    (unreadable / "images" / first_test).unlink()
    (unreadable / "images" / first_test).write_text("not a PNG")
    return {"missing_image": missing, "unreadable_image": unreadable, "first_test": first_test,
            "root": root, "cap_dir": cap_dir, "cap": cap_dir / "pytorch_model.bin.0", "cap_sd": cap_sd,
            "ret": root / "ret.bin", "syn": syn_root, "empty_test": empty,
            "bef": syn_root / "clevr" / "images" / "CLEVR_default_000000.png",
            "aft": syn_root / "clevr" / "sc_images" / "CLEVR_semantic_000000.png"}


@pytest.fixture(autouse=True)
def hermetic_clip_lookup(tmp_path, monkeypatch):
    """No real ViT-B-32.pt can be found (HOME and cwd are empty temporary directories), and the name
    ViT-B/32 builds the tiny sizes here, so its cases run on tiny checkpoints in well under a second."""
    from clip4idc.models.config import CLIP_NAMES

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home)
    monkeypatch.setitem(CLIP_NAMES, "ViT-B/32", "tiny")


def _in_cap_dir(tmp: Path, ctx, name: str, obj=None, raw: bytes | None = None) -> Path:
    """A checkpoint file beside a copy of the caption sidecar (so predict/visualize get that far)."""
    folder = tmp / "ckpt"
    folder.mkdir(exist_ok=True)
    shutil.copy(ctx["cap_dir"] / "clip4idc_config.json", folder / "clip4idc_config.json")
    path = folder / name
    if raw is not None:
        path.write_bytes(raw)
    else:
        torch.save(obj, path)
    return path


def _without(sd, key):
    return OrderedDict((k, v) for k, v in sd.items() if k != key)


def _with(sd, key, value):
    out = OrderedDict(sd)
    out[key] = value
    return out


def _truncated(path: Path, dest: Path) -> Path:
    data = path.read_bytes()
    dest.write_bytes(data[: len(data) // 2])
    return dest


def _scripted_with_setstate(path: Path) -> Path:
    """A TorchScript archive whose module defines __setstate__ (code loading would run)."""

    class WithState(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(2))

        @torch.jit.export
        def __getstate__(self):
            return (self.weight, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[torch.Tensor, bool]):
            self.weight = state[0]
            self.training = state[1]

    torch.jit.save(torch.jit.script(WithState()), str(path))
    return path


def _caption_eval(ctx, out: Path, init: Path, *extra: str, data: Path | None = None) -> list[str]:
    return (["--do_eval", "--data_path", str(data or ctx["syn"] / "clevr"), "--output_dir", str(out),
             "--init_model", str(init), "--gt_dir", str(ctx["syn"] / "gt"), "--caption_metrics", "Bleu",
             "--n_visualize", "0"] + TINY_FLAGS + list(extra))


def _caption_train(ctx, out: Path, *extra: str, flags=None) -> list[str]:
    return (["--do_train", "--data_path", str(ctx["syn"] / "clevr"), "--output_dir", str(out), "--epochs", "1",
             "--gt_dir", str(ctx["syn"] / "gt"), "--caption_metrics", "Bleu", "--n_visualize", "0", "--batch_size",
             "8"] + (TINY_FLAGS if flags is None else flags) + list(extra))


def _retrieval_train(ctx, out: Path, *extra: str, flags=None) -> list[str]:
    return (["--do_train", "--data_path", str(ctx["syn"] / "clevr"), "--output_dir", str(out), "--epochs", "1",
             "--batch_size", "8"] + (TINY_FLAGS if flags is None else flags) + list(extra))


def _flags_without_random():
    return [f for f in TINY_FLAGS if f != "--random_clip_weights"]


def _vit_flags():
    """Tiny flags, but asking for the OpenAI ViT-B/32 weights."""
    flags = _flags_without_random()
    flags[flags.index("tiny")] = "ViT-B/32"
    return flags


# Each case: (tmp, ctx, out) -> (entry point, argv, [substrings of the one-line message]). `out` is an
# output directory that already holds files from an earlier run; it must be byte-identical afterwards.
def _case_missing_decoder_key(tmp, ctx, out):
    bad = _in_cap_dir(tmp, ctx, "no_decoder_key.bin", _without(ctx["cap_sd"], DECODER_KEY))
    return caption_main, _caption_eval(ctx, out, bad), [
        "no_decoder_key.bin", "field 'decoder.decoder_layers.0.output.dense.weight'", "--init_model_partial"]


def _case_stage1_missing_clip_key(tmp, ctx, out):
    sd = torch.load(ctx["ret"], weights_only=True)
    bad = tmp / "ret_no_ln_mid.bin"
    torch.save(_without(sd, "clip.visual.ln_mid.weight"), bad)
    return caption_main, _caption_train(ctx, out, "--init_model", str(bad)), [
        "ret_no_ln_mid.bin", "field 'clip.visual.ln_mid.weight'", "--init_model_partial"]


def _case_eval_with_stage1_checkpoint(tmp, ctx, out):
    return caption_main, _caption_eval(ctx, out, ctx["ret"]), ["ret.bin", "field 'decoder.", "--init_model_partial"]


def _case_shape_mismatch(tmp, ctx, out):
    sd = _with(ctx["cap_sd"], "clip.visual.joint_positional_embedding", torch.zeros(7, 64))
    bad = _in_cap_dir(tmp, ctx, "wrong_shape.bin", sd)
    return caption_main, _caption_eval(ctx, out, bad), ["wrong_shape.bin", "joint_positional_embedding", "shape"]


def _case_nan_weights(tmp, ctx, out):
    weight = ctx["cap_sd"]["clip.visual.ln_mid.weight"].clone()
    weight[3] = float("nan")
    bad = _in_cap_dir(tmp, ctx, "nan.bin", _with(ctx["cap_sd"], "clip.visual.ln_mid.weight", weight))
    return caption_main, _caption_eval(ctx, out, bad), ["nan.bin", "field 'clip.visual.ln_mid.weight'", "NaN"]


def _case_integer_weights(tmp, ctx, out):
    weight = torch.ones(ctx["cap_sd"]["clip.visual.ln_mid.weight"].shape, dtype=torch.int64)
    bad = _in_cap_dir(tmp, ctx, "int.bin", _with(ctx["cap_sd"], "clip.visual.ln_mid.weight", weight))
    return caption_main, _caption_eval(ctx, out, bad), ["int.bin", "field 'clip.visual.ln_mid.weight'", "int64"]


def _case_empty_state_dict(tmp, ctx, out):
    bad = _in_cap_dir(tmp, ctx, "empty_dict.bin", OrderedDict())
    return caption_main, _caption_eval(ctx, out, bad), ["empty_dict.bin", "no tensors"]


def _case_truncated_bin(tmp, ctx, out):
    bad = _truncated(ctx["cap"], tmp / "truncated.bin")
    return caption_main, _caption_eval(ctx, out, bad), ["truncated.bin", "truncated"]


def _case_truncated_safetensors(tmp, ctx, out):
    full = tmp / "full.safetensors"
    save_file({k: v.contiguous().clone() for k, v in torch.load(ctx["ret"], weights_only=True).items()}, str(full))
    bad = _truncated(full, tmp / "truncated.safetensors")
    return retrieval_main, _retrieval_train(ctx, out, "--init_model", str(bad)), ["truncated.safetensors"]


def _case_text_file_checkpoint(tmp, ctx, out):
    bad = _in_cap_dir(tmp, ctx, "notes.bin", raw=b"these are my notes, not weights\n")
    return caption_main, _caption_eval(ctx, out, bad), ["notes.bin", "not a torch checkpoint"]


def _case_garbage_with_trust(tmp, ctx, out):
    bad = tmp / "garbage.bin"
    bad.write_bytes(b"garbage, not a checkpoint at all \x01\x02\x03")
    return convert_main, ["--input", str(bad), "--output", str(out / "converted.safetensors"),
                          "--trust_checkpoint"], ["garbage.bin"]


def _case_empty_test_split(tmp, ctx, out):
    return caption_main, _caption_eval(ctx, out, ctx["cap"], data=ctx["empty_test"]), [
        "splits.json", "field 'test'", "no items"]


def _case_empty_test_split_retrieval(tmp, ctx, out):
    argv = _retrieval_train(ctx, out)
    argv[argv.index("--data_path") + 1] = str(ctx["empty_test"])
    return retrieval_main, argv, ["splits.json", "field 'test'", "no items"]


def _case_missing_test_image(tmp, ctx, out):
    return caption_main, _caption_eval(ctx, out, ctx["cap"], data=ctx["missing_image"]), [
        "images", "field 'test'", ctx["first_test"], "--skip_missing_images"]


def _case_gt_not_coco(tmp, ctx, out):
    gt_dir = tmp / "gt"
    gt_dir.mkdir()
    (gt_dir / "clevr_total_change_captions_reformat.json").write_text(json.dumps([{"caption": "x"}]))
    argv = _caption_eval(ctx, out, ctx["cap"])
    argv[argv.index("--gt_dir") + 1] = str(gt_dir)
    return caption_main, argv, ["clevr_total_change_captions_reformat.json", "field 'annotations'"]


def _case_missing_openai_weights(tmp, ctx, out):
    return retrieval_main, _retrieval_train(ctx, out, flags=_vit_flags()), [
        "ViT-B/32", "field '--pretrained_clip_name'", "ViT-B-32.pt", ".cache/clip", "--random_clip_weights"]


def _case_size_config_without_random_flag(tmp, ctx, out):
    return retrieval_main, _retrieval_train(ctx, out, flags=_flags_without_random()), [
        "tiny", "field '--pretrained_clip_name'", "--random_clip_weights"]


def _case_init_model_lacks_clip_tensors(tmp, ctx, out):
    sd = OrderedDict((k, v) for k, v in torch.load(ctx["ret"], weights_only=True).items()
                     if not k.startswith("clip.transformer."))  # no text tower
    bad = tmp / "no_text_tower.bin"
    torch.save(sd, bad)
    return retrieval_main, _retrieval_train(ctx, out, "--init_model", str(bad), "--init_model_partial",
                                            flags=_vit_flags()), ["ViT-B/32", "lacks", "ViT-B-32.pt"]


def _case_training_run_exists(tmp, ctx, out):
    (out / "pytorch_model.bin.0").write_bytes(ctx["cap"].read_bytes())
    return caption_main, _caption_train(ctx, out, "--init_model", str(ctx["ret"])), [
        "pytorch_model.bin.0", "field '--output_dir'", "overwrite"]


def _case_length_penalty_without_beam(tmp, ctx, out):
    return caption_main, _caption_eval(ctx, out, ctx["cap"], "--length_penalty", "1.0"), [
        "--length_penalty", "--beam_size"]


def _case_sidecar_not_json(tmp, ctx, out):
    bad = _in_cap_dir(tmp, ctx, "model.bin", ctx["cap_sd"])
    (bad.parent / "clip4idc_config.json").write_text("{not json")
    return predict_main, ["--init_model", str(bad), "--before", str(ctx["bef"]), "--after", str(ctx["aft"]),
                          "--output", str(out / "captions.json")], ["clip4idc_config.json", "invalid JSON"]


def _case_jit_setstate(tmp, ctx, out):
    bad = _scripted_with_setstate(tmp / "scripted.pt")
    return convert_main, ["--input", str(bad), "--output", str(out / "converted.safetensors")], [
        "scripted.pt", "__setstate__", "--trust_checkpoint"]


def _case_num_threads_zero(tmp, ctx, out):
    return caption_main, _caption_eval(ctx, out, ctx["cap"], "--num_threads", "0"), ["--num_threads", "must be >= 1"]


def _case_to_safetensors_into_used_dir(tmp, ctx, out):
    return convert_main, ["--to_safetensors", str(ctx["cap"]), str(out)], [str(out), "not an empty directory"]


def _case_publish_metrics_not_json(tmp, ctx, out):
    bad = tmp / "scores.json"
    bad.write_text("{not json")
    return (convert_main, ["--to_safetensors", str(ctx["cap"]), str(tmp / "pub"), "--metrics_file", str(bad)],
            ["scores.json", "not a readable results JSON"])


CASES = [
    pytest.param(_case_missing_decoder_key, id="missing_decoder_key"),
    pytest.param(_case_stage1_missing_clip_key, id="stage1_checkpoint_missing_clip_key"),
    pytest.param(_case_eval_with_stage1_checkpoint, id="caption_eval_of_stage1_checkpoint"),
    pytest.param(_case_shape_mismatch, id="shape_mismatch"),
    pytest.param(_case_nan_weights, id="nan_weights"),
    pytest.param(_case_integer_weights, id="integer_weights"),
    pytest.param(_case_empty_state_dict, id="empty_state_dict"),
    pytest.param(_case_truncated_bin, id="truncated_bin"),
    pytest.param(_case_truncated_safetensors, id="truncated_safetensors"),
    pytest.param(_case_text_file_checkpoint, id="text_file_as_checkpoint"),
    pytest.param(_case_garbage_with_trust, id="garbage_with_trust_checkpoint"),
    pytest.param(_case_empty_test_split, id="empty_test_split_caption"),
    pytest.param(_case_empty_test_split_retrieval, id="empty_test_split_retrieval"),
    pytest.param(_case_missing_test_image, id="missing_test_image"),
    pytest.param(_case_gt_not_coco, id="gt_not_coco"),
    pytest.param(_case_missing_openai_weights, id="missing_openai_weights"),
    pytest.param(_case_size_config_without_random_flag, id="size_config_without_random_flag"),
    pytest.param(_case_init_model_lacks_clip_tensors, id="init_model_lacks_clip_tensors"),
    pytest.param(_case_training_run_exists, id="training_run_exists"),
    pytest.param(_case_length_penalty_without_beam, id="length_penalty_without_beam"),
    pytest.param(_case_sidecar_not_json, id="sidecar_not_json"),
    pytest.param(_case_jit_setstate, id="torchscript_setstate"),
    pytest.param(_case_num_threads_zero, id="num_threads_zero"),
    pytest.param(_case_to_safetensors_into_used_dir, id="to_safetensors_into_used_dir"),
    pytest.param(_case_publish_metrics_not_json, id="publish_metrics_not_json"),
]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run_failing(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2, err
    assert err and err[-1].startswith("error: "), err
    return err[-1]


def _earlier_run(out: Path) -> dict[str, bytes]:
    out.mkdir()
    (out / "log.txt").write_text("05/01/2026 10:00:00:INFO: an earlier run\n")
    (out / "hyp_ep_3.json").write_text('[{"caption": "the red block moved", "image_id": "000001.png"}]')
    return _snapshot(out)


@pytest.mark.parametrize("make", CASES)
def test_bad_input_is_one_line_exit_2_and_output_untouched(make, tmp_path, ctx, capsys):
    out = tmp_path / "out"
    _earlier_run(out)
    main, argv, needles = make(tmp_path, ctx, out)
    before = _snapshot(out)
    line = _run_failing(main, argv, capsys)
    for needle in needles:
        assert needle in line, line
    assert _snapshot(out) == before


CHECKPOINT_READERS = {
    "caption_init_model": lambda ctx, out, bad: (caption_main, _caption_eval(ctx, out, bad)),
    "retrieval_init_model": lambda ctx, out, bad: (retrieval_main,
                                                   _retrieval_train(ctx, out, "--init_model", str(bad))),
    "openai_weights_path": lambda ctx, out, bad: (retrieval_main, _retrieval_train(
        ctx, out, flags=[str(bad) if f == "tiny" else f for f in TINY_FLAGS])),
    "resume_model": lambda ctx, out, bad: (caption_main, _caption_train(
        ctx, out, "--init_model", str(ctx["ret"]), "--resume_model", str(bad))),
    "predict": lambda ctx, out, bad: (predict_main, ["--init_model", str(bad), "--before", str(ctx["bef"]),
                                                     "--after", str(ctx["aft"]), "--output", str(out / "c.json")]),
    "visualize": lambda ctx, out, bad: (visualize_main, ["--init_model", str(bad), "--data_path",
                                                         str(ctx["syn"] / "clevr"), "--output_dir", str(out)]),
    "convert": lambda ctx, out, bad: (convert_main, ["--input", str(bad), "--output", str(out / "c.safetensors")]),
    "to_safetensors": lambda ctx, out, bad: (convert_main, ["--to_safetensors", str(bad), str(out / "pub")]),
}
GADGETS = {"reduce": "os.system", "nested": "os.system", "numpy": "runstring"}


@pytest.mark.parametrize("gadget", sorted(GADGETS))
@pytest.mark.parametrize("reader", sorted(CHECKPOINT_READERS))
def test_crafted_pickle_is_refused_and_runs_nothing(reader, gadget, tmp_path, ctx, capsys):
    marker = tmp_path / "pwned"
    payload = {"clip.visual.ln_mid.weight": torch.ones(64), "extra": _gadget(gadget, marker)}
    if reader == "resume_model":
        payload = {"epoch": 0, "optimizer_state_dict": _gadget(gadget, marker), "loss": 0.0}
    bad = _in_cap_dir(tmp_path, ctx, "bad.bin", payload)
    out = tmp_path / "out"
    before = _earlier_run(out)
    main, argv = CHECKPOINT_READERS[reader](ctx, out, bad)
    line = _run_failing(main, argv, capsys)
    assert "bad.bin" in line and GADGETS[gadget] in line, line
    assert not marker.exists()
    assert _snapshot(out) == before


@pytest.mark.parametrize("make", [pytest.param(_case_missing_decoder_key, id="missing_decoder_key"),
                                  pytest.param(_case_empty_test_split_retrieval, id="empty_test_split"),
                                  pytest.param(_case_missing_openai_weights, id="missing_openai_weights")])
def test_failed_launch_leaves_no_directory(make, tmp_path, ctx, capsys):
    out = tmp_path / "fresh" / "run"
    main, argv, needles = make(tmp_path, ctx, out)
    _run_failing(main, argv, capsys)
    assert not out.exists() and not out.parent.exists()


def test_plain_torchscript_archive_still_loads(tmp_path):
    """OpenAI's ViT-B-32.pt is a TorchScript archive without __setstate__: read without --trust_checkpoint."""
    from clip4idc.convert import read_state_dict

    lin = torch.nn.Linear(3, 2)
    torch.jit.save(torch.jit.script(lin), str(tmp_path / "lin.pt"))
    sd = read_state_dict(tmp_path / "lin.pt")
    torch.testing.assert_close(sd["weight"], lin.weight.detach())
    with zipfile.ZipFile(tmp_path / "lin.pt") as archive:
        assert any("code/" in n for n in archive.namelist())
    assert np.isfinite(sd["bias"].numpy()).all()


def test_unreadable_test_image_is_one_line_with_loader_workers(tmp_path, ctx, capsys):
    """An unreadable item is an error, never replaced by another one; with DataLoader workers (the
    default --num_thread_reader 1) it used to surface as a multi-line RuntimeError. The run found it
    during evaluation, after opening its outputs: earlier files are kept, log.txt only grows."""
    out = tmp_path / "out"
    before = _earlier_run(out)
    argv = _caption_eval(ctx, out, ctx["cap"], data=ctx["unreadable_image"]) + ["--num_thread_reader", "1"]
    line = _run_failing(caption_main, argv, capsys)
    assert ctx["first_test"] in line and "cannot read image" in line, line
    after = _snapshot(out)
    assert after["hyp_ep_3.json"] == before["hyp_ep_3.json"] and after["log.txt"].startswith(before["log.txt"])
    assert "hyp_ep_eval.json" not in after


def test_skip_missing_images_restores_the_original_and_counts(tmp_path, ctx):
    out = tmp_path / "out"
    argv = _caption_eval(ctx, out, ctx["cap"], "--skip_missing_images", data=ctx["missing_image"])
    assert caption_main(argv) == 0
    scores = json.loads((out / "scores_ep_eval.json").read_text())
    hyps = json.loads((out / "hyp_ep_eval.json").read_text())
    assert scores["skipped_items"] == 1 and json.loads((out / "eval_metrics.json").read_text())["skipped_items"] == 1
    assert ctx["first_test"].split("_")[-1] not in {h["image_id"] for h in hyps} and len(hyps) == 2 * 15
