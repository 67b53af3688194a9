"""Crafted and malformed inputs (issue 11): every case runs a real CLI in-process and must exit with status 2,
print one line naming the file (and the field where there is one), run no code from a pickle and leave the
files already in its directories byte-identical."""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
from argparse import Namespace
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
import torch

from common.errors import run_cli
from sc_helpers import train_argv
from spatial_captioning import convert, create_report, eval as eval_cli, eval_ensemble, train as train_cli
from spatial_captioning.opts import parse_train_opt
from spatial_captioning.training import Trainer

CLIS = {"eval": eval_cli.main, "train": train_cli.main, "ensemble": eval_ensemble.main,
        "report": create_report.main, "convert": convert.main}


class _Reduce:
    """Pickles as `fn(*args)`: what a crafted file asks the unpickler to call."""

    def __init__(self, fn: Callable, args: tuple):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _os_system(marker: Path) -> bytes:
    return pickle.dumps(_Reduce(os.system, (f"touch {marker}",)), protocol=2)


def _nested_torch_load(marker: Path) -> bytes:
    inner = io.BytesIO()
    torch.save(_Reduce(os.system, (f"touch {marker}",)), inner)
    return pickle.dumps(_Reduce(torch.storage._load_from_bytes, (inner.getvalue(),)))


def _numpy_global(marker: Path) -> bytes:
    from numpy.testing._private.utils import runstring  # exec()s its first argument

    return pickle.dumps(_Reduce(runstring, (f"import os; os.system('touch {marker}')", {})))


def _torch_file(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"att_embed.0.weight": torch.zeros(2, 2), "evil": _Reduce(os.system, (f"touch {marker}",))}, buf)
    return buf.getvalue()


PAYLOADS = {"os_system": (_os_system, "wants to call os.system"),
            "nested_torch_load": (_nested_torch_load, "nested in it wants to call os.system"),
            "numpy_global": (_numpy_global, "numpy.testing._private.utils.runstring")}


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_payloads_run_code_under_plain_pickle(name, tmp_path):
    """The crafted files are live: plain unpickling runs them (so the refusals below mean something)."""
    marker = tmp_path / "pwned"
    pickle.loads(PAYLOADS[name][0](marker))
    assert marker.exists()


@pytest.fixture(scope="module")
def run(syn, tmp_path_factory) -> Path:
    """A one-iteration tiny spatial_pe run: model.pth, optimizer.pth, infos_t.pkl, histories_t.pkl."""
    ck = tmp_path_factory.mktemp("sc_bad_inputs") / "run"
    Trainer(parse_train_opt(train_argv(syn, ck, max_iters=1))).run()
    return ck


class Ctx:
    """What a case builder needs: the data, the trained run, a private directory, the marker path."""

    def __init__(self, syn: dict, run: Path, tmp: Path):
        self.syn, self.run, self.tmp = syn, run, tmp
        self.marker = tmp / "pwned"
        self.out = tmp / "out"
        (self.out / "vis").mkdir(parents=True)
        (self.out / "vis" / "keep.json").write_text('{"earlier": "result"}')

    def write(self, rel: str, data: bytes | str) -> Path:
        """A file under the case directory."""
        path = self.tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return path

    def copy_run(self, rel: str = "runcopy") -> Path:
        """A private copy of the trained run directory."""
        return Path(shutil.copytree(self.run, self.tmp / rel))

    def eval_argv(self, *extra: str, model: Path | None = None, infos: Path | None = None) -> list[str]:
        """eval.py on the trained run, 4 test images, greedy, outputs under out/."""
        return ["--model", str(model or self.run / "model.pth"), "--infos_path", str(infos or self.run / "infos_t.pkl"),
                "--device", "cpu", "--num_images", "4", "--beam_size", "1", "--dump_images", "0",
                "--verbose_beam", "0", "--vis_dir", str(self.out / "vis"),
                "--eval_results_dir", str(self.out / "results"), *extra]

    def train_argv(self, *extra: str) -> list[str]:
        """train.py, tiny configuration, 1 iteration, checkpoints under out/ck."""
        ck = self.out / "ck"
        ck.mkdir(exist_ok=True)
        (ck / "notes.txt").write_text("mine")
        return train_argv(self.syn, ck, max_iters=1, extra=list(extra))


def _infos_case(payload: str) -> Callable:
    def build(c: Ctx):
        path = c.write("infos_evil.pkl", PAYLOADS[payload][0](c.marker))
        return "eval", c.eval_argv(infos=path), ["infos_evil.pkl", PAYLOADS[payload][1]]
    return build


def _resume_case(payload: str) -> Callable:
    def build(c: Ctx):
        start = c.copy_run()
        (start / "infos_t.pkl").write_bytes(PAYLOADS[payload][0](c.marker))
        return "train", c.train_argv("--start_from", str(start)), ["infos_t.pkl", PAYLOADS[payload][1]]
    return build


def _ensemble_case(payload: str) -> Callable:
    def build(c: Ctx):
        root = c.tmp / "runs"
        shutil.copytree(c.run, root / "a")
        (root / "a" / "infos_a-best.pkl").write_bytes(PAYLOADS[payload][0](c.marker))
        return "ensemble", ["--ids", "a", "--checkpoint_root", str(root), "--device", "cpu",
                            "--vis_dir", str(c.out / "vis"), "--eval_results_dir", str(c.out / "results")], \
            ["infos_a-best.pkl", PAYLOADS[payload][1]]
    return build


def _report_case(payload: str) -> Callable:
    def build(c: Ctx):
        path = c.write("evil_report_data.pkl", PAYLOADS[payload][0](c.marker))
        return "report", ["--pickles", str(path), "--run_names", "a", "--out_dir", str(c.out / "report")], \
            ["evil_report_data.pkl", PAYLOADS[payload][1]]
    return build


def _cider_df_case(payload: str) -> Callable:
    def build(c: Ctx):
        path = c.write("coco-train-idxs.p", PAYLOADS[payload][0](c.marker))
        argv = c.train_argv("--self_critical_after", "0", "--cached_tokens", str(path))
        argv.remove("--noamopt")
        return "train", argv, ["coco-train-idxs.p", PAYLOADS[payload][1]]
    return build


def _model_case(c: Ctx):
    path = c.write("evil_model.pth", _torch_file(c.marker))
    return "eval", c.eval_argv(model=path), ["evil_model.pth", "wants to call os.system"]


def _convert_case(c: Ctx):
    path = c.write("evil_model.pth", _torch_file(c.marker))
    return "convert", ["--input", str(path), "--output", str(c.out / "converted.pth")], \
        ["evil_model.pth", "wants to call os.system"]


def _histories_case(c: Ctx):
    start = c.copy_run()
    (start / "histories_t.pkl").write_bytes(_os_system(c.marker))
    return "train", c.train_argv("--start_from", str(start)), ["histories_t.pkl", "wants to call os.system"]


def _optimizer_case(c: Ctx):
    start = c.copy_run()
    (start / "optimizer.pth").write_bytes(_torch_file(c.marker))
    return "train", c.train_argv("--start_from", str(start)), ["optimizer.pth", "wants to call os.system"]


# --- malformed inputs --------------------------------------------------------------------------------------
def _copy_data(c: Ctx, key: str) -> Path:
    return Path(shutil.copytree(c.syn[key], c.tmp / Path(c.syn[key]).name))


def _feature_width_train(c: Ctx):
    return "train", c.train_argv("--img_feat_size", "48"), ["1.npz", "field 'feat'", "width 32", "expects 48"]


def _feature_width_eval(c: Ctx):
    feats = c.tmp / "att16"
    feats.mkdir()
    for cocoid in range(451, 455):  # the first 4 test images (400 train and 50 val come first)
        with np.load(Path(c.syn["input_img_feat_dir"]) / f"{cocoid}.npz") as z:
            np.savez(feats / f"{cocoid}.npz", feat=z["feat"][:, :16])
    return "eval", c.eval_argv("--input_img_feat_dir", str(feats)), ["field 'feat'", "width 16", "expects 32"]


def _nan_features(c: Ctx):
    feats = _copy_data(c, "input_img_feat_dir")
    bad = np.full((5, 32), np.nan, dtype=np.float32)
    np.savez(feats / "1.npz", feat=bad)
    return "train", c.train_argv("--input_img_feat_dir", str(feats), "--seed", "0"), \
        ["field 'feat'", "NaN"]


def _integer_features(c: Ctx):
    feats = _copy_data(c, "input_img_feat_dir")
    for f in feats.glob("*.npz"):
        np.savez(f, feat=np.ones((4, 32), dtype=np.int64))
    return "train", c.train_argv("--input_img_feat_dir", str(feats)), ["field 'feat'", "int64"]


def _grid_size(c: Ctx):
    grids = _copy_data(c, "input_grid_vec_dir")
    for f in grids.glob("*.npy"):
        np.save(f, np.load(f)[:, :25])
    return "train", c.train_argv("--input_grid_vec_dir", str(grids)), \
        ["field 'grid_vector'", "width 25", "expects 36"]


def _label_not_hdf5(c: Ctx):
    path = c.write("cocotalk_label.h5", "labels,start,end\n1,2,3\n")
    return "train", c.train_argv("--input_label_h5", str(path)), ["cocotalk_label.h5", "not a readable HDF5 file"]


def _label_too_few_rows(c: Ctx):
    path = c.tmp / "short_label.h5"
    with h5py.File(c.syn["input_label_h5"], "r") as src, h5py.File(path, "w") as dst:
        for key in src:
            dst[key] = src[key][()]
        del dst["labels"]
        dst["labels"] = src["labels"][:100]
    return "train", c.train_argv("--input_label_h5", str(path)), \
        ["short_label.h5", "field 'label_end_ix'", "100 rows"]


def _garbage_infos(c: Ctx):
    path = c.write("infos_garbage.pkl", bytes(range(7, 250)) * 3)
    return "eval", c.eval_argv(infos=path), ["infos_garbage.pkl", "not a pickle"]


def _infos_without_vocab(c: Ctx):
    path = c.write("infos_novocab.pkl", pickle.dumps({"opt": Namespace(caption_model="spatial_pe")}))
    return "eval", c.eval_argv(infos=path), ["infos_novocab.pkl", "field 'vocab'"]


def _truncated_pth(c: Ctx):
    data = (c.run / "model.pth").read_bytes()
    path = c.write("model_truncated.pth", data[: len(data) // 2])
    return "eval", c.eval_argv(model=path), ["model_truncated.pth", "truncated"]


def _missing_weight(c: Ctx):
    sd = torch.load(c.run / "model.pth", weights_only=True)
    sd.pop("model.generator.proj.weight")
    path = c.tmp / "model_partial.pth"
    torch.save(sd, path)
    return "eval", c.eval_argv(model=path), ["model_partial.pth", "model.generator.proj.weight"]


def _non_image_dump_png(c: Ctx):
    root = c.tmp / "images"
    shutil.copytree(c.syn["image_root"], root)
    first = root / "val2014" / "COCO_val2014_000000000451.jpg"  # the first test image
    first.write_text("not an image")
    return "eval", c.eval_argv("--dump_png", "2", "--image_root", str(root)), \
        [first.name, "field 'file_path'", "not a readable image"]


def _no_matching_annotations(c: Ctx):
    path = c.write("captions_other.json", '{"annotations": [{"image_id": 99999, "caption": "a cat"}]}')
    return "eval", c.eval_argv("--language_eval", "1", "--ann_file", str(path), "--lang_metrics", "CIDEr"), \
        ["predictions of", "cocotalk.json", "field 'image_id'", "0/4 predictions", "captions_other.json"]


def _bad_json_wording(c: Ctx):
    path = c.write("captions_broken.json", '{"annotations": [{"caption": "a cat')
    return "eval", c.eval_argv("--language_eval", "1", "--ann_file", str(path)), \
        ["captions_broken.json", "Unterminated string starting at (line 1, column"]


def _earlier_vis_json(c: Ctx):
    run = c.copy_run()
    (run / "vis").mkdir()
    (run / "vis" / "vis.json").write_text('[{"image_id": 1, "caption": "earlier"}]')
    argv = c.eval_argv(model=run / "model.pth", infos=run / "infos_t.pkl")
    for flag in ("--vis_dir", "--eval_results_dir"):
        i = argv.index(flag)
        del argv[i: i + 2]
    return "eval", argv, ["vis.json", "exists from an earlier evaluation"]


def _train_without_references(c: Ctx):
    argv = c.train_argv("--language_eval", "1", "--ann_file", str(c.tmp / "captions_missing.json"))
    return "train", argv, ["captions_missing.json", "not found"]


def _ort_batchnorm_infos(c: Ctx):
    opt = Namespace(caption_model="relation_transformer", rnn_size=64, use_bn=1, vocab_size=30, seq_length=10)
    path = c.write("infos_ort_bn.pkl", pickle.dumps({"opt": opt, "vocab": {"1": "a"}}, protocol=2))
    return "eval", c.eval_argv(infos=path), ["infos_ort_bn.pkl", "field 'use_bn'"]


CASES: dict[str, Callable] = {
    **{f"eval_infos_{p}": _infos_case(p) for p in PAYLOADS},
    **{f"train_start_from_infos_{p}": _resume_case(p) for p in PAYLOADS},
    **{f"ensemble_infos_{p}": _ensemble_case(p) for p in PAYLOADS},
    **{f"create_report_{p}": _report_case(p) for p in PAYLOADS},
    **{f"scst_cider_df_{p}": _cider_df_case(p) for p in PAYLOADS},
    "eval_model_pth_os_system": _model_case,
    "convert_input_os_system": _convert_case,
    "train_start_from_histories_os_system": _histories_case,
    "train_start_from_optimizer_os_system": _optimizer_case,
    "feature_width_train": _feature_width_train,
    "feature_width_eval": _feature_width_eval,
    "nan_features": _nan_features,
    "integer_features": _integer_features,
    "grid_file_wrong_size": _grid_size,
    "label_h5_not_hdf5": _label_not_hdf5,
    "label_h5_too_few_rows": _label_too_few_rows,
    "garbage_infos_pickle": _garbage_infos,
    "infos_without_vocab": _infos_without_vocab,
    "truncated_pth": _truncated_pth,
    "missing_checkpoint_key": _missing_weight,
    "non_image_dump_png": _non_image_dump_png,
    "no_matching_annotations": _no_matching_annotations,
    "json_error_wording": _bad_json_wording,
    "eval_never_overwrites_vis_json": _earlier_vis_json,
    "ort_infos_with_batchnorm": _ort_batchnorm_infos,
    "train_language_eval_without_references": _train_without_references,
}


def _snapshot(*roots: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for root in roots for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_line(case, syn, run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything written relative to the CWD would show up in the snapshot
    ctx = Ctx(syn, run, tmp_path)
    cli, argv, expected = CASES[case](ctx)
    before = _snapshot(tmp_path, run)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_cli(CLIS[cli], argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    for text in expected:
        assert text in err[0], (text, err[0])
    assert " at at " not in err[0]
    assert not ctx.marker.exists(), "code in a crafted file ran"
    assert _snapshot(tmp_path, run) == before, "files were written, changed or removed by a failed run"


def test_eval_writes_under_the_run_directory(syn, run, tmp_path, monkeypatch):
    """Default outputs go to <run>/vis and <run>/eval_results, never into the working directory."""
    monkeypatch.chdir(tmp_path)
    ctx = Ctx(syn, run, tmp_path)
    copy = ctx.copy_run()
    argv = ["--model", str(copy / "model.pth"), "--infos_path", str(copy / "infos_t.pkl"), "--device", "cpu",
            "--num_images", "4", "--beam_size", "1", "--dump_images", "0", "--verbose_beam", "0",
            "--language_eval", "1", "--lang_metrics", "CIDEr"]
    run_cli(eval_cli.main, argv)
    assert (copy / "vis" / "vis.json").is_file() and (copy / "eval_results" / "t_test.json").is_file()
    assert not (tmp_path / "vis").exists() and not (tmp_path / "eval_results").exists()
    umask = os.umask(0)
    os.umask(umask)
    assert (copy / "vis" / "vis.json").stat().st_mode & 0o777 == 0o666 & ~umask
    run_cli(eval_cli.main, [*argv, "--overwrite", "1", "--beam_size", "2"])  # replaced only when asked
    assert json.loads((copy / "eval_results" / "t_test.json").read_text())["beam_size"] == 2
