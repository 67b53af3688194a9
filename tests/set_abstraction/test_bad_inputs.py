"""Issue 11: every bad input to train.py / test.py stops before any work with one line naming the file (and the
record and field where there is one), exit code 2; crafted pickles are refused without running anything; files
already in the output directories are untouched and a failed launch creates no directory."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.testing._private.utils import runstring

from common.errors import run_cli
from set_abstraction import convert, predict, synthetic, test, train
from set_abstraction.clips import clip_frames, write_clips, write_mp4
from set_abstraction.convert import to_original_state_dict
from set_abstraction.model import build_model
from set_abstraction.scripts import extract_features

SUB = Path("AbstractionEmbedding") / "AbstractionEmbeddingModule"
TRAIN_FEATURES = "resnet3d50_moments_train_features.pth"
TEST_FEATURES = "resnet3d50_moments_test_features.pth"
TRAIN_EMB = "moments_train_embeddings.pth"
CATEGORY_EMB = "moments_category_embeddings.pth"
TRAIN_SETS = "moments_train_abstraction_sets.json"
VAL_SETS = "moments_val_abstraction_sets.json"
HUMAN_SETS = "moments_human_abstraction_sets.json"
CKPT = "AbstractionEmbedding_prev_best.pth.tar"


# -- crafted pickles ------------------------------------------------------------------------------

class _Shell:
    """Unpickling calls os.system(cmd)."""

    def __init__(self, cmd: str):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


class _NestedTorchLoad:
    """Unpickling calls torch.storage._load_from_bytes on a pickle that calls os.system."""

    def __init__(self, cmd: str):
        self.payload = pickle.dumps(_Shell(cmd), protocol=2)

    def __reduce__(self):
        return torch.storage._load_from_bytes, (self.payload,)


class _NumpyExec:
    """Unpickling calls numpy.testing's runstring, which exec()s its argument."""

    def __init__(self, cmd: str):
        self.code = f"import os; os.system({cmd!r})"

    def __reduce__(self):
        return runstring, (self.code, {})


GADGETS = {"os_system": _Shell, "nested_torch_load": _NestedTorchLoad, "numpy_runstring": _NumpyExec}


def _plant(kind: str, target: str, legacy_format: bool = False) -> Callable:
    """A mutation replacing ``target`` by a torch.save of a gadget that would touch the marker file."""
    def mutate(data: Path, ckpt: Path, marker: Path) -> list[str]:
        payload = {"x.mp4": GADGETS[kind](f"touch {marker}")}
        path = ckpt if target == CKPT else data / target
        torch.save(payload, path, _use_new_zipfile_serialization=not legacy_format)
        return ["--resume", str(ckpt)] if target == CKPT else []
    return mutate


# -- ordinary bad files ---------------------------------------------------------------------------

def _edit_tensor(name: str, fn: Callable) -> Callable:
    def mutate(data: Path, ckpt: Path, marker: Path) -> list[str]:
        path = data / name
        torch.save(fn(torch.load(path, weights_only=True)), path)
        return []
    return mutate


def _edit_json(name: str, fn: Callable) -> Callable:
    def mutate(data: Path, ckpt: Path, marker: Path) -> list[str]:
        path = data / name
        path.write_text(json.dumps(fn(json.loads(path.read_text()))))
        return []
    return mutate


def _edit_ckpt(fn: Callable) -> Callable:
    def mutate(data: Path, ckpt: Path, marker: Path) -> list[str]:
        obj = torch.load(ckpt, weights_only=True)
        fn(obj)
        torch.save(obj, ckpt)
        return ["--resume", str(ckpt)]
    return mutate


def _truncate(name: str) -> Callable:
    def mutate(data: Path, ckpt: Path, marker: Path) -> list[str]:
        path = ckpt if name == CKPT else data / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return ["--resume", str(ckpt)] if name == CKPT else []
    return mutate


def _write(name: str, content: str) -> Callable:
    def mutate(data: Path, ckpt: Path, marker: Path) -> list[str]:
        (ckpt if name == CKPT else data / name).write_text(content)
        return ["--resume", str(ckpt)] if name == CKPT else []
    return mutate


def _inf_in_first_used_row(data: Path, ckpt: Path, marker: Path) -> list[str]:
    first = json.loads((data / TRAIN_SETS).read_text())[0]["videos"][0]
    row = list(torch.load(data / TRAIN_EMB, weights_only=True)).index(first)  # moments: embeddings order
    features = torch.load(data / TRAIN_FEATURES, weights_only=True)
    features[row, 3] = float("inf")
    torch.save(features, data / TRAIN_FEATURES)
    return []


def _map_dict(fn: Callable) -> Callable:
    return lambda d: {k: fn(v) for k, v in d.items()}


def _model_config(text: str) -> Callable:
    def mutate(data: Path, ckpt: Path, marker: Path) -> list[str]:
        (data / "sizes.json").write_text(text)
        return ["--model_config", str(data / "sizes.json")]
    return mutate


def _nan_dist(human: dict) -> dict:
    human["3"][1]["query"][2][2] = float("nan")
    return human


def _drop_key(ckpt: dict) -> None:
    del ckpt["state_dict"]["module.relations.2.relate.1.weight"]


def _bigger_classifier(ckpt: dict) -> None:
    ckpt["state_dict"]["module.last_linear.weight"] = torch.zeros(28, 64)


def _nan_weight(ckpt: dict) -> None:
    ckpt["state_dict"]["module.embedding_linear.bias"][0] = float("nan")


def _foreign_optimizer(ckpt: dict) -> None:
    ckpt["optimizer"]["param_groups"][0]["params"] = [0, 1]


# (entry, mutation, expected substrings of the error line, launch failure: nothing may be created)
CASES = [
    pytest.param("train", _write(TRAIN_SETS, "[]"), [TRAIN_SETS, "holds no abstraction sets"], True, id="empty-train-sets"),
    pytest.param("train", _write(VAL_SETS, "[]"), [VAL_SETS, "holds no abstraction sets"], True, id="empty-val-sets"),
    pytest.param("train", _edit_tensor(TRAIN_FEATURES, lambda f: torch.full_like(f, float("nan"))),
                 [TRAIN_FEATURES, "field 'features'", "NaN or inf"], True, id="all-nan-features"),
    pytest.param("train", _inf_in_first_used_row, [TRAIN_FEATURES, "field 'features'", "NaN or inf"], True,
                 id="inf-in-one-feature-row"),
    pytest.param("train", _edit_tensor(TRAIN_FEATURES, lambda f: (f * 10).long()),
                 [TRAIN_FEATURES, "field 'features'", "torch.int64 is not a floating type"], True, id="int-features"),
    pytest.param("train", _edit_tensor(TRAIN_FEATURES, lambda f: f[:, :128].clone()),
                 [TRAIN_FEATURES, "field 'features'", "width 128 but the model expects 256"], True,
                 id="feature-width-differs-from-model"),
    pytest.param("train", _edit_tensor(TRAIN_FEATURES, lambda f: f[:0].clone()),
                 [TRAIN_FEATURES, "field 'features'", "empty tensor"], True, id="empty-features"),
    pytest.param("train", _edit_tensor(TRAIN_EMB, _map_dict(lambda v: v[:299].clone())),
                 [TRAIN_EMB, "field 'embedding'", "width 299 but the model expects 300"], True,
                 id="video-embedding-width"),
    pytest.param("train", _edit_tensor(TRAIN_EMB, _map_dict(lambda v: v * float("nan"))),
                 [TRAIN_EMB, "field 'embedding'", "NaN or inf"], True, id="nan-video-embeddings"),
    pytest.param("train", _edit_tensor(CATEGORY_EMB, _map_dict(lambda v: v.int())),
                 [CATEGORY_EMB, "field 'embedding'", "torch.int32 is not a floating type"], True,
                 id="int-category-embeddings"),
    pytest.param("train", _edit_tensor(CATEGORY_EMB, lambda d: {}), [CATEGORY_EMB, "empty dict"], True,
                 id="empty-category-embeddings"),
    pytest.param("train", _truncate(TRAIN_FEATURES), [TRAIN_FEATURES, "truncated"], True, id="truncated-features"),
    pytest.param("train", _write(TRAIN_EMB, "video embeddings\n"), [TRAIN_EMB, "not a torch checkpoint"], True,
                 id="text-file-as-embeddings"),
    pytest.param("train", _truncate(CKPT), [CKPT, "truncated"], True, id="truncated-resume"),
    pytest.param("train", _write(CKPT, "not a checkpoint\n"), [CKPT, "not a torch checkpoint"], True,
                 id="text-file-as-resume"),
    pytest.param("train", _edit_ckpt(_drop_key), [CKPT, "relations.2.relate.1.weight", "missing"], True,
                 id="resume-missing-weight-key"),
    pytest.param("train", _edit_ckpt(_bigger_classifier), [CKPT, "last_linear.weight", "[28, 64]"], True,
                 id="resume-wrong-shape"),
    pytest.param("train", _edit_ckpt(lambda c: c.pop("epoch")), [CKPT, "field 'epoch'", "missing top-level key"],
                 True, id="resume-missing-epoch"),
    pytest.param("train", _edit_ckpt(_nan_weight), [CKPT, "field 'state_dict'", "embedding_linear.bias", "NaN"],
                 True, id="resume-nan-weights"),
    pytest.param("train", _edit_ckpt(_foreign_optimizer), [CKPT, "field 'optimizer'", "does not fit"], True,
                 id="resume-foreign-optimizer-state"),
    pytest.param("train", _model_config('{"in_features": 256, "bottleneck": 32}'),
                 ["sizes.json", "field 'bottleneck'", "unknown key"], True, id="model-config-unknown-key"),
    pytest.param("train", _model_config('{"in_features": -4}'), ["sizes.json", "field 'in_features'", "positive int"],
                 True, id="model-config-negative-size"),
    pytest.param("train", _edit_tensor(TRAIN_FEATURES, lambda f: torch.full_like(f, 3e38)),
                 [TRAIN_SETS, "record epoch 0 batch 0 (step 1)", "field 'loss'", "loss is"], False,
                 id="finite-features-give-nan-loss"),
    pytest.param("test", _write(HUMAN_SETS, "{}"), [HUMAN_SETS, "holds no human test sets"], True,
                 id="empty-human-sets"),
    pytest.param("test", _edit_json(HUMAN_SETS, lambda h: {**h, "4": []}), [HUMAN_SETS, "record 4", "empty list"],
                 True, id="empty-human-key"),
    pytest.param("test", _edit_json(HUMAN_SETS, _nan_dist), [HUMAN_SETS, "record 3[1]", "field 'query'", "finite dist"],
                 True, id="nan-human-distance"),
    pytest.param("test", _edit_tensor(TEST_FEATURES, lambda f: torch.full_like(f, float("nan"))),
                 [TEST_FEATURES, "field 'features'", "NaN or inf"], True, id="nan-test-features"),
    pytest.param("test", _edit_tensor(TEST_FEATURES, lambda f: f[:, :100].clone()),
                 [TEST_FEATURES, "field 'features'", "width 100"], True, id="test-feature-width"),
    pytest.param("test", _truncate(CKPT), [CKPT, "truncated"], True, id="test-truncated-resume"),
]
GADGET_CALLS = {"os_system": "wants to call os.system", "nested_torch_load": "nested in it wants to call os.system",
                "numpy_runstring": "wants to call numpy.testing._private.utils.runstring"}
for _kind in GADGETS:
    for _target, _entry in ((TRAIN_FEATURES, "train"), (TRAIN_EMB, "train"), (CATEGORY_EMB, "train"),
                            (CKPT, "train"), (TEST_FEATURES, "test"), (CKPT, "test")):
        CASES.append(pytest.param(_entry, _plant(_kind, _target), [_target, "refused", GADGET_CALLS[_kind]], True,
                                  id=f"{_entry}-{_kind}-in-{_target}"))
CASES.append(pytest.param(_entry, _plant(_kind, _target), [_target, "refused" if _kind != "nested_torch_load"
                                                                  else ""], True,
                                  id=f"{_entry}-{_kind}-in-{_target.split('_')[-1]}"))
CASES.append(pytest.param("train", _plant("os_system", CKPT, legacy_format=True), [CKPT, "wants to call os.system"],
                          True, id="train-os_system-legacy-format-resume"))


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> tuple[Path, Path]:
    """A small synthetic moments metadata dir and an original-layout checkpoint of the tiny model."""
    root = tmp_path_factory.mktemp("sa_bad")
    data = synthetic.generate(root / "data", datasets=["moments"], num_videos=(60, 40, 40), num_train_sets=16,
                              num_val_sets=8, human_per_key=3)
    torch.manual_seed(0)
    model = build_model("tiny")
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=5e-4)
    torch.save({"epoch": 1, "state_dict": to_original_state_dict(model.state_dict()),
                "optimizer": optimizer.state_dict(), "best_acc1": 10.0}, root / CKPT)
    return data, root / CKPT


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("entry,mutate,expected,launch", CASES)
def test_bad_input_stops_with_one_line(entry, mutate, expected, launch, originals, tmp_path, capsys):
    data = Path(shutil.copytree(originals[0], tmp_path / "data"))
    ckpt = Path(shutil.copy(originals[1], tmp_path / CKPT))
    marker = tmp_path / "pwned"
    work = tmp_path / "work"
    # What an earlier run left in the output directories (the checkpoint directory does not exist yet).
    (work / "logs" / SUB).mkdir(parents=True)
    (work / "logs" / SUB / "earlier_run.txt").write_text("Epoch: [0][0/1]\tearlier run\n")
    (work / "out" / SUB).mkdir(parents=True)
    (work / "out" / SUB / "earlier_run_results.json").write_text('{"top1@abstr": 99.0}\n')
    before = _snapshot(work)

    extra = mutate(data, ckpt, marker)
    argv = ["--metadata_dir", str(data), "--model_config", "tiny", "--lr", "3e-3", "-b", "8", "--num_workers", "0",
            "--log_dir", str(work / "logs"), "--checkpoint_dir", str(work / "ckpt"), "--output_dir", str(work / "out"),
            "--exp_id", "bad"]
    if entry == "train":
        argv += ["--num_epochs", "1", "--max_step", "1"]
    elif "--resume" not in extra and "--model_config" not in extra:
        extra += ["--resume", str(ckpt)]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train.main if entry == "train" else test.main, argv + extra)
    err = capsys.readouterr().err

    assert exit_info.value.code == 2
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ")
    for text in expected:
        assert text in line, (text, line)
    if "not a torch checkpoint" in line or "truncated" in line:
        assert "--trust_checkpoint" not in line  # trusting such a file would not help
    assert not marker.exists()  # no crafted pickle ran
    after = _snapshot(work)
    for path, content in before.items():
        assert after[path] == content, path
    if launch:
        assert after == before  # nothing created: no half-made directories, logs or checkpoints
    else:
        assert not list(work.rglob("*.pth.tar")) and not list(work.rglob("step_*"))  # nothing saved from a NaN


def _convert_argv(weights: Path, out: Path) -> list[str]:
    return ["--input", str(weights), "--output", str(out / "converted.safetensors"), "--model_config", "tiny"]


def _extract_argv(weights: Path, out: Path) -> list[str]:
    videos = out.parent / "videos"
    videos.mkdir(exist_ok=True)
    (videos / "clip.avi").write_bytes(b"")  # never decoded: the weights are read first
    return ["--video_dir", str(videos), "--out_dir", str(out), "--arch", "resnet3d14", "--width", "4",
            "--weights", str(weights)]


def _predict_clips(root: Path) -> list[Path]:
    if not (root / "clips").is_dir():
        write_clips(root / "clips", num_frames=6, size=32)
    return sorted((root / "clips").glob("[rb]*.mp4"))[:3]


def _predict_resume_argv(weights: Path, out: Path) -> list[str]:
    return ["--videos", *map(str, _predict_clips(out.parent)), "--resume", str(weights), "--model_config", "tiny",
            "--arch", "resnet3d14", "--width", "8", "--num_frames", "4", "--frame_size", "32", "--out", str(out)]


def _predict_backbone_argv(weights: Path, out: Path) -> list[str]:
    torch.manual_seed(0)
    build_model("tiny").save_pretrained(out.parent / "pub")
    return ["--videos", *map(str, _predict_clips(out.parent)), "--resume", str(out.parent / "pub"),
            "--backbone_weights", str(weights), "--arch", "resnet3d14", "--width", "8", "--num_frames", "4",
            "--frame_size", "32", "--out", str(out)]


@pytest.mark.parametrize("cli,make_argv", [(convert, _convert_argv), (extract_features, _extract_argv),
                                           (predict, _predict_resume_argv), (predict, _predict_backbone_argv)],
                         ids=["convert-input", "extract_features-weights", "predict-resume", "predict-backbone"])
@pytest.mark.parametrize("kind", [*GADGETS, "truncated", "text"])
def test_other_pickle_readers_refuse_bad_files(cli, make_argv, kind, originals, tmp_path, capsys):
    """convert.py --input and extract_features.py --weights: crafted pickles refused (nothing runs), truncated or
    text files named in one line; the output directory keeps what it had and gains nothing."""
    weights = Path(shutil.copy(originals[1], tmp_path / "weights.pth.tar"))
    marker = tmp_path / "pwned"
    if kind in GADGETS:
        torch.save({"state_dict": {"x": GADGETS[kind](f"touch {marker}")}}, weights)
        expected = ["refused", GADGET_CALLS[kind]]
    elif kind == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
        expected = ["truncated"]
    else:
        weights.write_text("weights\n")
        expected = ["not a torch checkpoint"]
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("kept\n")
    before = _snapshot(out)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(cli.main, make_argv(weights, out))
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and line.startswith(f"error: {weights}: ")
    for text in expected:
        assert text in line, (text, line)
    assert not marker.exists()
    assert _snapshot(out) == before


# -- predict.py: bad videos ------------------------------------------------------------------------

def _garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 12)


def _png(path: Path) -> None:
    import cv2

    ok, data = cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))
    path.write_bytes(data.tobytes())


VIDEO_CASES = [
    pytest.param("broken.mp4", _garbage, "does not decode as a video", id="does-not-decode"),
    pytest.param("empty.mp4", lambda p: p.write_bytes(b""), "empty file (0 bytes), not a video", id="empty"),
    pytest.param("short.mp4", lambda p: write_mp4(p, clip_frames((9, 9, 9), (1, 0), 3, 32)),
                 "has 3 frame(s), fewer than the 4 requested (--num_frames)", id="shorter-than-num-frames"),
    pytest.param("frame.png", _png, "is an image (.png), a video was expected", id="image-file"),
    pytest.param("still.mp4", _png, "is an image (png_pipe), a video was expected", id="image-named-mp4"),
    pytest.param("missing.mp4", None, "video not found", id="missing"),
]


@pytest.mark.parametrize("as_candidate", [False, True], ids=["member", "candidate"])
@pytest.mark.parametrize("name,make,message", VIDEO_CASES)
def test_predict_bad_video_one_line(name, make, message, as_candidate, tmp_path, capsys):
    """A bad clip among the set or the candidates: one line naming it, exit 2, nothing written to --out."""
    good = _predict_clips(tmp_path)
    torch.manual_seed(0)
    build_model("tiny").save_pretrained(tmp_path / "pub")
    bad = tmp_path / name
    if make is not None:
        make(bad)
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("kept\n")
    before = _snapshot(out)
    videos = [*map(str, good), *([] if as_candidate else [str(bad)])]
    argv = ["--videos", *videos, "--resume", str(tmp_path / "pub"), "--arch", "resnet3d14", "--width", "8",
            "--num_frames", "4", "--frame_size", "32", "--out", str(out), "--num_threads", "1"]
    if as_candidate:
        argv += ["--candidates", str(good[0]), str(bad)]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(predict.main, argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"error: {bad}: {message}" or (
        message.startswith("does not decode") and err.strip().splitlines()[-1].startswith(f"error: {bad}: {message}"))
    assert _snapshot(out) == before


@pytest.mark.parametrize("flags,message", [
    (["--videos", "ONE"], "error: --videos: a set needs 2 to 8 videos, got 1"),
    (["--width", "4"], "error: --arch: resnet3d14 width 4 gives 128-d features, the checkpoint takes 256-d"),
], ids=["one-video", "feature-width"])
def test_predict_bad_flags(flags, message, tmp_path, capsys):
    good = _predict_clips(tmp_path)
    torch.manual_seed(0)
    build_model("tiny").save_pretrained(tmp_path / "pub")
    argv = ["--videos", *map(str, good), "--resume", str(tmp_path / "pub"), "--arch", "resnet3d14", "--width", "8",
            "--num_frames", "4", "--frame_size", "32", "--out", str(tmp_path / "out")]
    argv += [str(good[0]) if f == "ONE" else f for f in flags]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(predict.main, argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == message
    assert not (tmp_path / "out").exists()


def test_extract_features_skips_a_bad_video_and_reports_it(tmp_path, capsys):
    videos = tmp_path / "videos"
    write_clips(videos, num_frames=6, size=32)
    _garbage(videos / "zz_broken.mp4")
    argv = ["--video_dir", str(videos), "--out_dir", str(tmp_path / "m"), "--arch", "resnet3d14", "--width", "4",
            "--num_frames", "4", "--frame_size", "32"]
    assert extract_features.main(argv) == 0
    captured = capsys.readouterr()
    assert f"skipped: {videos / 'zz_broken.mp4'}: does not decode as a video" in captured.err
    assert len((tmp_path / "m" / "moments_test_listfile.txt").read_text().splitlines()) == 6
    with pytest.raises(SystemExit) as exit_info:
        run_cli(extract_features.main, argv + ["--out_dir", str(tmp_path / "s"), "--strict"])
    assert exit_info.value.code == 2 and not (tmp_path / "s").exists()
