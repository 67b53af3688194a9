"""common.regions weight import: key lists of the released files, strict loading of synthesised files in both
layouts, refusal of wrong layouts and of pickles that ask for code; detector forward shapes."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from common.errors import run_cli
from common.safe_pickle import load_pickle
from common.regions import convert, weights as W
from common.regions.detectors import BottomUpC4, BottomUpConfig, Detectron2C4, Detectron2Config
from common.regions.image import bottom_up_input, detectron2_input, shortest_edge_size
from common.regions.trunk import TrunkConfig

TINY_BU = TrunkConfig(**{**W.TINY_TRUNK.__dict__, "caffe_stem_pool": True, "res5_dilation": 2})


@pytest.mark.parametrize("name,layout,count", [("detectron2_r101_c4_keys.txt", "detectron2", 534),
                                               ("bua_r101_c4_keys.txt", "bottom_up", 535)])
def test_released_key_lists_map_strictly(fixtures_dir, name, layout, count, capsys):
    got_layout, keys = convert.parse_key_file(fixtures_dir / name)
    assert (got_layout, len(keys)) == (layout, count)
    assert convert.check_keys(layout, keys) == (count, count)
    run_cli(convert.main, ["--check-keys", str(fixtures_dir / name)])
    assert f"{count}/{count} keys map" in capsys.readouterr().out


@pytest.mark.parametrize("edit,message", [
    (lambda k: k.pop("roi_heads.res5.2.conv3.norm.running_var"), "1 missing"),
    (lambda k: k.update({"roi_heads.box_predictor.extra.weight": (3, 3)}), "1 unexpected"),
    (lambda k: k.update({"backbone.res4.7.conv2.weight": (256, 256, 1, 1)}), "1 shape-mismatched"),
    (lambda k: k.update({"backbone.res4.23.conv1.weight": (256, 1024, 1, 1)}), "released configuration"),
], ids=["missing", "unexpected", "misshaped", "extra-block"])
def test_key_list_problems_are_refused(fixtures_dir, tmp_path, edit, message, capsys):
    _, keys = convert.parse_key_file(fixtures_dir / "detectron2_r101_c4_keys.txt")
    edit(keys)
    path = tmp_path / "keys.txt"
    path.write_text("# layout: detectron2\n" + "".join(f"{k}\t[{', '.join(map(str, s))}]\n" for k, s in keys.items()))
    with pytest.raises(SystemExit) as exc:
        run_cli(convert.main, ["--check-keys", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and message in err


@pytest.mark.parametrize("layout,suffix", [("detectron2", "pkl"), ("bottom_up", "pth")])
def test_synthesised_files_in_both_layouts_load_strictly(tmp_path, layout, suffix):
    path = W.write_random_weights(tmp_path / f"w.{suffix}", layout, seed=1)
    model = W.load_detector(path, layout)
    expected = W.random_state(model.cfg, seed=1)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[key])
    if layout == "detectron2":  # the real layout: a plain pickle of {"model": {name: numpy array}}
        raw = load_pickle(path)
        assert isinstance(raw["model"]["backbone.stem.conv1.weight"], np.ndarray)
        assert model.cfg.trunk.blocks == (3, 4, 23, 3)


def _d2_arrays(seed: int = 0) -> dict:
    return {k: v.numpy() for k, v in W.random_state(Detectron2Config(trunk=W.TINY_TRUNK), seed).items()}


class _Pwn:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _NestedTorchLoad:
    def __init__(self, payload: bytes):
        self.payload = payload

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.payload,))


class _NumpyGadget:
    def __reduce__(self):
        return (np.testing._private.utils.runstring, ("import os; os.system('touch MARKER')", {}))


def _write_pickle(path, obj):
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)
    return path


def _bad_weight_case(tmp_path, case):
    marker = tmp_path / "pwned"
    if case == "reduce-gadget":
        arrays = _d2_arrays()
        arrays["backbone.stem.conv1.weight"] = _Pwn(marker)
        return _write_pickle(tmp_path / "m.pkl", {"model": arrays}), "detectron2", "os.system"
    if case == "nested-torch-load":
        inner = pickle.dumps(_Pwn(marker), protocol=2)
        return _write_pickle(tmp_path / "m.pkl", {"model": {"x": _NestedTorchLoad(inner)}}), "detectron2", "os.system"
    if case == "numpy-global":
        return _write_pickle(tmp_path / "m.pkl", {"model": {"x": _NumpyGadget()}}), "detectron2", "runstring"
    if case == "pth-reduce-gadget":
        path = tmp_path / "m.pth"
        torch.save({"model": {"w": torch.zeros(1)}, "meta": _Pwn(marker)}, path)
        return path, "bottom_up", "os.system"
    if case == "not-a-dict":
        return _write_pickle(tmp_path / "m.pkl", [1, 2, 3]), "detectron2", "field 'model'"
    if case == "torch-file-as-pkl":
        return W.write_random_weights(tmp_path / "m.pkl", "bottom_up"), "detectron2", "field 'model'"
    if case == "pkl-as-pth":
        return W.write_random_weights(tmp_path / "m.pth", "detectron2"), "bottom_up", "field 'model'"
    if case == "missing-key":
        arrays = _d2_arrays()
        del arrays["roi_heads.mask_head.deconv.bias"]
        return _write_pickle(tmp_path / "m.pkl", {"model": arrays}), "detectron2", "roi_heads.mask_head.deconv.bias"
    if case == "nan-weights":
        arrays = _d2_arrays()
        arrays["backbone.res3.1.conv2.weight"][0, 0, 0, 0] = np.nan
        return _write_pickle(tmp_path / "m.pkl", {"model": arrays}), "detectron2", "backbone.res3.1.conv2.weight"
    if case == "string-array":
        arrays = _d2_arrays()
        arrays["backbone.stem.conv1.weight"] = np.array(["a", "b"])
        return _write_pickle(tmp_path / "m.pkl", {"model": arrays}), "detectron2", "backbone.stem.conv1.weight"
    if case == "bad-pixel-mean":
        arrays = _d2_arrays()
        arrays["pixel_mean"] = np.zeros((4, 1, 1), np.float32)
        return _write_pickle(tmp_path / "m.pkl", {"model": arrays}), "detectron2", "pixel_mean"
    if case == "truncated":
        path = W.write_random_weights(tmp_path / "m.pth", "bottom_up")
        path.write_bytes(path.read_bytes()[:5000])
        return path, "bottom_up", "m.pth"
    if case == "missing-file":
        return tmp_path / "absent.pkl", "detectron2", "absent.pkl"
    raise AssertionError(case)


BAD_WEIGHTS = ["reduce-gadget", "nested-torch-load", "numpy-global", "pth-reduce-gadget", "not-a-dict",
               "torch-file-as-pkl", "pkl-as-pth", "missing-key", "nan-weights", "string-array", "bad-pixel-mean",
               "truncated", "missing-file"]


@pytest.mark.parametrize("case", BAD_WEIGHTS, ids=BAD_WEIGHTS)
def test_bad_weight_files_give_one_line_and_run_nothing(tmp_path, case, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, layout, needle = _bad_weight_case(tmp_path, case)
    with pytest.raises(SystemExit) as exc:
        run_cli(convert.main, ["--check", str(path), "--layout", layout])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and str(path) in err and needle in err, err
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "MARKER").exists()


def test_pixel_mean_of_older_detectron2_files_is_tolerated(tmp_path):
    arrays = _d2_arrays()
    arrays["pixel_mean"] = np.array([103.53, 116.28, 123.675], np.float32).reshape(3, 1, 1)
    W.load_detector(_write_pickle(tmp_path / "m.pkl", {"model": arrays, "__author__": "x"}), "detectron2")


def test_detectors_pool_at_stride_16_and_keep_10_to_100_regions():
    torch.manual_seed(0)
    d2 = Detectron2C4(Detectron2Config(trunk=W.TINY_TRUNK)).eval()
    d2.load_state_dict(W.random_state(d2.cfg))
    x = torch.randn(1, 3, 96, 128)
    assert d2.backbone(x).shape == (1, 64, 6, 8)
    feats = d2.region_features(x, torch.tensor([[0.0, 0.0, 128.0, 96.0], [10.0, 20.0, 30.0, 21.0]]))
    assert feats.shape == (2, 128) and torch.isfinite(feats).all()
    bu = BottomUpC4(BottomUpConfig(trunk=TINY_BU)).eval()
    bu.load_state_dict(W.random_state(bu.cfg))
    rgb = np.random.default_rng(0).integers(0, 255, (150, 200, 3), dtype=np.uint8)
    image, scale = bottom_up_input(rgb, bu.cfg.pixel_mean)
    assert image.shape == (1, 3, 600, 800) and scale == 4.0
    out = bu.detect(image, scale)
    k = len(out["features"])
    assert 10 <= k <= 100 and out["features"].shape == (k, 128)
    assert (out["boxes"][:, 0] >= 0).all() and (out["boxes"][:, 2] <= 200).all() and (out["boxes"][:, 3] <= 150).all()
    assert out["objects"].max() < 1600 and out["attrs"].max() < 400


def test_test_time_resize_follows_each_detector():
    assert shortest_edge_size(600, 800, 800, 1333) == (800, 1067)
    assert shortest_edge_size(500, 2000, 800, 1333) == (333, 1333)
    rgb = np.zeros((600, 800, 3), np.uint8)
    tensor, sx, sy = detectron2_input(rgb, (103.530, 116.280, 123.675))
    assert tensor.shape == (1, 3, 800, 1067) and sy == 800 / 600 and sx == 1067 / 800
    assert tensor[0, :, 0, 0].tolist() == pytest.approx([-103.530, -116.280, -123.675])  # BGR order
    _, scale = bottom_up_input(np.zeros((300, 1000, 3), np.uint8), (0.0, 0.0, 0.0))
    assert scale == 1.0  # 600/300 = 2 would make the long side 2000 > 1000
