"""eval.py --image_folder (spatial_captioning.image_folder, issue 13): captions and one PNG per image from raw images,
with regions detected on the fly or read from --feature_dir; bad inputs give one line, exit 2, outputs untouched."""
from __future__ import annotations

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from common.errors import run_cli
from common.regions.detectors import BottomUpConfig
from common.regions.trunk import TrunkConfig
from common.regions.weights import random_state
from spatial_captioning import image_folder as imf


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    import matplotlib.cbook

    root = tmp_path_factory.mktemp("sc_raw")
    paths = imf.write_demo_checkpoint(root / "ckpt")
    images = root / "images"
    images.mkdir()
    shutil.copy(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), images / "hopper_3.jpg")
    paths["images"] = images
    written, _ = imf.extract_folder(images, root / "features", paths["weights"], progress=False)
    assert written == 1
    paths["features"] = root / "features"
    return paths


def _argv(demo, vis, **over):
    args = {"--image_folder": demo["images"], "--model": demo["model"], "--infos_path": demo["infos"],
            "--detector_weights": demo["weights"], "--vis_dir": vis, "--device": "cpu", "--beam_size": "2",
            "--verbose_beam": "0"}
    args.update(over)
    return [str(x) for kv in args.items() if kv[1] is not None for x in kv]


def test_captions_raw_images_with_detector_or_feature_dir(demo, tmp_path, capsys):
    run_cli(imf.main, _argv(demo, tmp_path / "vis"))
    preds = json.loads((tmp_path / "vis" / "vis.json").read_text())
    assert [p["image_id"] for p in preds] == [3] and preds[0]["file_path"] == "hopper_3.jpg"
    assert preds[0]["caption"].strip()
    png = (tmp_path / "vis" / "png" / "3.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # the stored features of scripts/extract_bu_features.py give the same caption
    run_cli(imf.main, _argv(demo, tmp_path / "vis2", **{"--detector_weights": None, "--feature_dir": demo["features"]}))
    assert json.loads((tmp_path / "vis2" / "vis.json").read_text()) == preds
    assert "image 3:" in capsys.readouterr().out


def test_eval_py_image_folder_is_the_same_path(demo, tmp_path):
    """eval.py --image_folder (the original's raw-image flag) runs this module and writes the same captions."""
    from spatial_captioning import eval as eval_script

    run_cli(imf.main, _argv(demo, tmp_path / "module"))
    run_cli(eval_script.main, _argv(demo, tmp_path / "eval"))
    assert json.loads((tmp_path / "eval" / "vis.json").read_text()) == \
        json.loads((tmp_path / "module" / "vis.json").read_text())
    assert (tmp_path / "eval" / "png" / "3.png").is_file()


def test_grid_vectors_follow_prepro_areas(demo):
    from types import SimpleNamespace

    from spatial_captioning.features import grid_vectors

    opt = SimpleNamespace(caption_model="spatial_pe", num_grids=36, use_grid=True)
    feats = np.ones((2, 4), np.float32)
    boxes = np.array([[0.0, 0.0, 60.0, 30.0], [30.0, 15.0, 120.0, 90.0]])
    x, side = imf.model_side_inputs(opt, feats, boxes, 120, 90)
    rel = boxes / np.array([120, 90, 120, 90])
    np.testing.assert_allclose(side[0].numpy(), grid_vectors(rel, 36), rtol=1e-6)
    assert side[0, 0].sum().item() == pytest.approx(36 * 0.5 * (1 / 3))  # half the width, a third of the height


class _Pwn:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _case(name, demo, tmp_path):
    if name == "no-folder":
        return {"--image_folder": tmp_path / "missing"}, "missing", "image_folder"
    if name == "unreadable-image":
        folder = tmp_path / "imgs"
        shutil.copytree(demo["images"], folder)
        (folder / "5.jpg").write_text("no jpeg")
        return {"--image_folder": folder}, "5.jpg", "image"
    if name == "no-detector-no-features":
        return {"--detector_weights": None}, "--detector_weights", "--feature_dir"
    if name == "feature-dir-missing-file":
        return {"--detector_weights": None, "--feature_dir": tmp_path}, "3.npz", "record 3"
    if name == "detector-width-mismatch":
        cfg = BottomUpConfig(trunk=TrunkConfig(stem_channels=8, res2_channels=8, bottleneck_channels=4,
                                               caffe_stem_pool=True, res5_dilation=2))
        path = tmp_path / "narrow.pth"
        torch.save({"model": random_state(cfg)}, path)
        return {"--detector_weights": path}, "narrow.pth", "img_feat_size"
    if name == "weights-code-pickle":
        path = tmp_path / "evil.pth"
        torch.save({"model": {"w": torch.zeros(1)}, "x": _Pwn(tmp_path / "pwned")}, path)
        return {"--detector_weights": path}, "evil.pth", "os.system"
    if name == "infos-code-pickle":
        path = tmp_path / "infos_evil.pkl"
        path.write_bytes(pickle.dumps({"opt": {}, "vocab": _Pwn(tmp_path / "pwned")}, protocol=2))
        return {"--infos_path": path}, "infos_evil.pkl", "os.system"
    if name == "feature-info-malformed":
        shutil.copytree(demo["features"], tmp_path / "feats")
        info = tmp_path / "feats" / "cocobu_info" / "3.json"
        info.write_text(json.dumps({**json.loads(info.read_text()), "objects": [1, 2]}))
        return {"--detector_weights": None, "--feature_dir": tmp_path / "feats"}, "3.json", "field 'objects'"
    if name == "vis-json-exists":
        return {}, "vis.json", "--overwrite"
    raise AssertionError(name)


CASES = ["no-folder", "unreadable-image", "no-detector-no-features", "feature-dir-missing-file",
         "detector-width-mismatch", "weights-code-pickle", "infos-code-pickle", "feature-info-malformed",
         "vis-json-exists"]


@pytest.mark.parametrize("name", CASES, ids=CASES)
def test_bad_inputs_one_line_exit_2_outputs_untouched(demo, tmp_path, name, capsys):
    vis = tmp_path / "vis"
    (vis / "png").mkdir(parents=True)
    (vis / "vis.json" if name == "vis-json-exists" else vis / "earlier.json").write_text("earlier")
    (vis / "png" / "1.png").write_bytes(b"earlier png")
    over, needle_file, needle = _case(name, demo, tmp_path)
    with pytest.raises(SystemExit) as exc:
        run_cli(imf.main, _argv(demo, vis, **over))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and needle_file in err and needle in err, err
    files = sorted(str(p.relative_to(vis)) for p in vis.rglob("*") if p.is_file())
    assert files == sorted(["vis.json" if name == "vis-json-exists" else "earlier.json", "png/1.png"])
    assert (vis / "png" / "1.png").read_bytes() == b"earlier png"
    assert not (tmp_path / "pwned").exists()
