"""scripts/extract_bu_features.py: images -> cocobu_att/fc/box files in make_bu_data.py's format (issue 13), resume,
and one-line errors for bad images and weight files with existing outputs untouched."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.errors import run_cli
from common.regions.extract import bottom_up_regions
from common.regions.image import read_image
from common.regions.weights import load_detector, write_random_weights
from spatial_captioning.features import make_bu_data, write_bottom_up_tsv

SCRIPT = Path(__file__).resolve().parents[2] / "spatial_captioning" / "scripts" / "extract_bu_features.py"
_spec = importlib.util.spec_from_file_location("extract_bu_features", SCRIPT)
ebf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ebf)


def _images(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(folder / "COCO_val2014_000000000012.jpg")
    Image.fromarray(rng.integers(0, 255, (100, 80, 3), dtype=np.uint8)).save(folder / "7.png")
    return folder


@pytest.fixture(scope="module")
def bua_weights(tmp_path_factory):
    return write_random_weights(tmp_path_factory.mktemp("bua") / "bua_tiny.pth", "bottom_up", seed=2)


def test_writes_make_bu_data_files_and_resumes(tmp_path, bua_weights, capsys):
    images = _images(tmp_path / "imgs")
    out = tmp_path / "data"
    run_cli(ebf.main, ["--image_dir", str(images), "--output_dir", str(out), "--weights", str(bua_weights),
                       "--no_progress"])
    assert sorted(p.name for p in (out / "cocobu_att").iterdir()) == ["12.npz", "7.npz"]
    feat = np.load(out / "cocobu_att" / "12.npz", allow_pickle=False)["feat"]
    fc = np.load(out / "cocobu_fc" / "12.npy", allow_pickle=False)
    box = np.load(out / "cocobu_box" / "12.npy", allow_pickle=False)
    k = len(feat)
    assert 10 <= k <= 100 and feat.shape == (k, 128) and box.shape == (k, 4)
    assert feat.dtype == fc.dtype == box.dtype == np.float32
    np.testing.assert_allclose(fc, feat.mean(0), rtol=1e-6)
    assert (box[:, :2] >= 0).all() and (box[:, 2] < 120).all() and (box[:, 3] < 90).all()
    regions = bottom_up_regions(load_detector(bua_weights, "bottom_up"), read_image(images / "COCO_val2014_000000000012.jpg"))
    np.testing.assert_allclose(feat, regions["features"], rtol=1e-5, atol=1e-6)
    # the same arrays through make_bu_data.py's TSV route give the same files (keys, dtypes, shapes, values)
    (tmp_path / "tsv" / "trainval").mkdir(parents=True)
    write_bottom_up_tsv(tmp_path / "tsv" / "trainval" / "x.tsv",
                        [{"image_id": 12, "image_w": 120, "image_h": 90, "boxes": box, "features": feat}])
    make_bu_data(str(tmp_path / "tsv"), str(tmp_path / "ref"), files=["x.tsv"])
    ref = np.load(tmp_path / "ref_att" / "12.npz", allow_pickle=False)
    assert ref.files == ["feat"] and ref["feat"].dtype == feat.dtype
    np.testing.assert_array_equal(ref["feat"], feat)
    np.testing.assert_array_equal(np.load(tmp_path / "ref_box" / "12.npy"), box)
    np.testing.assert_allclose(np.load(tmp_path / "ref_fc" / "12.npy"), fc, rtol=1e-6)
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    capsys.readouterr()
    run_cli(ebf.main, ["--image_dir", str(images), "--output_dir", str(out), "--weights", str(bua_weights),
                       "--no_progress"])
    assert "wrote 0 images' features" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    assert not [p for p in out.rglob(".*")]


class _Pwn:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _case(name, images, tmp_path, weights):
    if name == "no-image-dir":
        return ["--image_dir", str(tmp_path / "none")], "none", "image_folder"
    if name == "unreadable-image":
        (images / "99.jpg").write_bytes(b"\xff\xd8 broken")
        return [], "99.jpg", "image"
    if name == "no-id-in-name":
        (images / "holiday.jpg").write_bytes((images / "7.png").read_bytes())
        return [], "holiday.jpg", "id"
    if name == "duplicate-id":
        (images / "0007.jpg").write_bytes((images / "7.png").read_bytes())
        return [], "7.png", "id"
    if name == "weights-wrong-layout":
        return ["--weights", str(write_random_weights(tmp_path / "d2.pkl", "detectron2"))], "d2.pkl", "field 'model'"
    if name == "weights-code-pickle":
        path = tmp_path / "evil.pth"
        torch.save({"model": {"w": torch.zeros(1)}, "x": _Pwn(tmp_path / "pwned")}, path)
        return ["--weights", str(path)], "evil.pth", "os.system"
    if name == "weights-truncated":
        path = tmp_path / "cut.pth"
        path.write_bytes(weights.read_bytes()[:4096])
        return ["--weights", str(path)], "cut.pth", "truncated"
    if name == "weights-missing-key":
        state = torch.load(weights, weights_only=True)["model"]
        del state["roi_heads.box_predictor.attr_linear2.bias"]
        path = tmp_path / "partial.pth"
        torch.save({"model": state}, path)
        return ["--weights", str(path)], "partial.pth", "attr_linear2.bias"
    raise AssertionError(name)


CASES = ["no-image-dir", "unreadable-image", "no-id-in-name", "duplicate-id", "weights-wrong-layout",
         "weights-code-pickle", "weights-truncated", "weights-missing-key"]


@pytest.mark.parametrize("name", CASES, ids=CASES)
def test_bad_inputs_one_line_exit_2_outputs_untouched(tmp_path, bua_weights, name, capsys):
    images = _images(tmp_path / "imgs")
    out = tmp_path / "data"
    (out / "cocobu_att").mkdir(parents=True)
    (out / "cocobu_att" / "12.npz").write_bytes(b"earlier")
    (out / "notes.txt").write_text("keep me")
    extra, needle_file, needle = _case(name, images, tmp_path, bua_weights)
    argv = ["--image_dir", str(images), "--output_dir", str(out), "--weights", str(bua_weights), "--no_progress"]
    with pytest.raises(SystemExit) as exc:
        run_cli(ebf.main, argv + extra)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and needle_file in err and needle in err, err
    assert (out / "cocobu_att" / "12.npz").read_bytes() == b"earlier" and (out / "notes.txt").read_text() == "keep me"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == ["cocobu_att/12.npz", "notes.txt"]
    assert not (tmp_path / "pwned").exists()
