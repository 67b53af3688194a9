"""visualcomet/scripts/extract_features.py: VCR images -> <id>.pkl region features (spec 2.7) with resume, and
one-line errors for bad images, metadata, boxes and weight files (issue 13), outputs left untouched."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from common.errors import run_cli
from common.regions.extract import detectron2_box_features
from common.regions.image import read_image
from common.regions.weights import load_detector, write_random_weights
from common.safe_pickle import load_pickle
from visualcomet.scripts import extract_features as ef


def _vcr_dir(root, n=2):
    rng = np.random.default_rng(0)
    for i in range(n):
        movie = root / f"movie{i}"
        movie.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(movie / f"clip{i}@{i}.jpg")
        meta = {"boxes": [[2.0, 3.0, 30.0, 40.0, 0.9], [10.5, 0.0, 64.0, 48.0, 0.8]], "names": ["person", "cup"],
                "width": 64, "height": 48, "segms": []}
        (movie / f"clip{i}@{i}.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="module")
def d2_weights(tmp_path_factory):
    return write_random_weights(tmp_path_factory.mktemp("d2") / "model_final_tiny.pkl", "detectron2", seed=3)


def test_extracts_whole_image_first_then_the_boxes_and_resumes(tmp_path, d2_weights, capsys):
    images = _vcr_dir(tmp_path / "vcr")
    out = tmp_path / "features"
    run_cli(ef.main, ["--image_dir", str(images), "--output_dir", str(out), "--weights", str(d2_weights),
                      "--no_progress"])
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["clip0@0.pkl", "clip1@1.pkl"]
    obj = load_pickle(files[0])  # readable by the restricted loader the training data goes through
    assert obj["image_features"].shape == (128,) and obj["object_features"].shape == (2, 128)
    assert obj["image_features"].dtype == np.float32
    model = load_detector(d2_weights, "detectron2")
    rgb = read_image(images / "movie0" / "clip0@0.jpg")
    alone = detectron2_box_features(model, rgb, np.array([[10.5, 0.0, 64.0, 48.0]]))
    np.testing.assert_allclose(alone[0], obj["image_features"], rtol=1e-5, atol=1e-6)  # [0, 0, w, h] first
    np.testing.assert_allclose(alone[1], obj["object_features"][1], rtol=1e-5, atol=1e-6)
    before = {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in files}
    capsys.readouterr()
    run_cli(ef.main, ["--image_dir", str(images), "--output_dir", str(out), "--weights", str(d2_weights),
                      "--no_progress"])
    printed = capsys.readouterr().out
    assert "wrote 0 feature files" in printed and "(2 already there)" in printed
    assert {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in sorted(out.iterdir())} == before
    assert not list(out.glob(".*"))  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert files[0].stat().st_mode & 0o777 == 0o666 & ~umask


class _Pwn:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _edit_meta(path, **changes):
    meta = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            meta.pop(k)
        else:
            meta[k] = v
    path.write_text(json.dumps(meta))


def _case(name, images, tmp_path, weights):
    meta1 = images / "movie1" / "clip1@1.json"
    if name == "no-image-dir":
        return ["--image_dir", str(tmp_path / "nope")], "nope", "image_dir"
    if name == "unreadable-image":
        (images / "movie1" / "clip1@1.jpg").write_bytes(b"not a jpeg at all")
        return [], "clip1@1.jpg", "image"
    if name == "missing-metadata":
        meta1.unlink()
        return [], "clip1@1.json", "metadata"
    if name == "no-boxes":
        _edit_meta(meta1, boxes=None)
        return [], "clip1@1.json", "boxes"
    if name == "no-names":
        _edit_meta(meta1, names=None)
        return [], "clip1@1.json", "names"
    if name == "box-outside":
        _edit_meta(meta1, boxes=[[2.0, 3.0, 30.0, 40.0], [10.0, 0.0, 65.5, 48.0]])
        return [], "clip1@1.json", "record 1: field 'boxes'"
    if name == "x2-before-x1":
        _edit_meta(meta1, boxes=[[30.0, 3.0, 2.0, 40.0], [10.0, 0.0, 60.0, 48.0]])
        return [], "clip1@1.json", "record 0: field 'boxes'"
    if name == "size-mismatch":
        _edit_meta(meta1, width=640)
        return [], "clip1@1.json", "width"
    if name == "weights-wrong-layout":
        return ["--weights", str(write_random_weights(tmp_path / "bua.pth", "bottom_up"))], "bua.pth", "model"
    if name == "weights-code-pickle":
        bad = tmp_path / "evil.pkl"
        bad.write_bytes(pickle.dumps({"model": {"w": _Pwn(tmp_path / "pwned")}}, protocol=2))
        return ["--weights", str(bad)], "evil.pkl", "os.system"
    raise AssertionError(name)


CASES = ["no-image-dir", "unreadable-image", "missing-metadata", "no-boxes", "no-names", "box-outside",
         "x2-before-x1", "size-mismatch", "weights-wrong-layout", "weights-code-pickle"]


@pytest.mark.parametrize("name", CASES, ids=CASES)
def test_bad_inputs_one_line_exit_2_outputs_untouched(tmp_path, d2_weights, name, capsys):
    images = _vcr_dir(tmp_path / "vcr")
    out = tmp_path / "features"
    out.mkdir()
    (out / "keep.pkl").write_bytes(b"existing output")
    (out / "clip0@0.pkl").write_bytes(b"already extracted")
    extra, needle_file, needle = _case(name, images, tmp_path, d2_weights)
    argv = ["--image_dir", str(images), "--output_dir", str(out), "--weights", str(d2_weights), "--no_progress"]
    with pytest.raises(SystemExit) as exc:
        run_cli(ef.main, argv + extra)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and needle_file in err and needle in err, err
    assert (out / "keep.pkl").read_bytes() == b"existing output"
    assert (out / "clip0@0.pkl").read_bytes() == b"already extracted"
    assert sorted(p.name for p in out.iterdir()) == ["clip0@0.pkl", "keep.pkl"]
    assert not (tmp_path / "pwned").exists()
