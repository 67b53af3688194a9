"""Issue 14: frame-indexed decoding picks today's frames; the published 3D ResNet-50 layouts load strictly;
``python -m set_abstraction.predict`` on synthetic clips."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from common.checkpoint import CheckpointKeyError
from common.errors import InputError
from set_abstraction import predict
from common.errors import run_cli
from set_abstraction import convert
from set_abstraction.backbone import (PUBLISHED_KEY_FILE, BackboneConfig, ResNet3d, build_backbone,
                                      convert_backbone_state_dict, parse_backbone_key_file)
from set_abstraction.clips import clip_frames, write_clips, write_mp4
from set_abstraction.convert import to_original_state_dict
from set_abstraction.model import build_model
from set_abstraction.scripts.extract_features import read_clip
from set_abstraction.video import available_reader, read_frames

KEY_FILE = Path(__file__).resolve().parent / "fixtures" / "resnet3d50_published_keys.txt"
READERS = ["pyav", "opencv"] + (["decord"] if available_reader("auto") == "decord" else [])


def full_decode(path: Path, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Before issue 14: decode every frame with OpenCV, then pick linspace(0, total - 1, n).round()."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    index = np.linspace(0, len(frames) - 1, num_frames).round().astype(int)
    return np.stack([frames[i] for i in index]), index


@pytest.fixture(scope="module")
def ramp(tmp_path_factory) -> Path:
    """45 frames, frame t a uniform grey 4 + 5t (its identity), H.264 with B-frames, a keyframe every 8."""
    return write_mp4(tmp_path_factory.mktemp("ramp") / "ramp.mp4", clip_frames(None, None, 45, 32, value_ramp=True))


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("num_frames", [1, 4, 12, 45])
def test_sampled_frames_are_todays_frames(ramp, reader, num_frames):
    expected, index = full_decode(ramp, num_frames)
    clip = read_frames(ramp, num_frames, reader=reader)
    assert clip.total == 45
    np.testing.assert_array_equal(clip.indices, index)
    identity = np.round((clip.frames.reshape(num_frames, -1).mean(1) - 4) / 5).astype(int)
    np.testing.assert_array_equal(identity, index)  # the frames themselves, not only their numbers
    assert np.abs(clip.frames.astype(int) - expected.astype(int)).max() <= 3  # decoder colour rounding


def test_short_clip_refused_unless_repeating(ramp, tmp_path):
    short = write_mp4(tmp_path / "short.mp4", clip_frames(None, None, 5, 32, value_ramp=True))
    with pytest.raises(InputError, match="has 5 frame\\(s\\), fewer than the 8 requested"):
        read_clip(short, 8, 16)
    frames, total = read_clip(short, 8, 16, allow_short=True)
    assert total == 5 and frames.shape == (8, 16, 16, 3)


@pytest.mark.parametrize("layout", ["moments", "kinetics"])
def test_published_backbone_layouts_load_strictly(layout):
    keys = parse_backbone_key_file(KEY_FILE)[layout]
    assert len(keys) == 320  # 318 backbone entries + the classifier's weight and bias
    with torch.device("meta"):
        model = build_backbone("resnet3d50")
        state = {k: torch.empty(shape) for k, shape in keys.items()}
    obj = {"state_dict": state} if layout == "moments" else state
    converted = convert_backbone_state_dict(obj, model, KEY_FILE)
    assert set(converted) == set(model.state_dict())
    for key, value in converted.items():
        assert value.shape == model.state_dict()[key].shape, key
    missing_counters = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert set(convert_backbone_state_dict(missing_counters, model, KEY_FILE)) == set(model.state_dict())
    bad = dict(state)
    first = next(iter(bad))
    bad[first] = torch.empty(64, 3, 3, 7, 7, device="meta")  # this port's earlier (3, 7, 7) stem
    from common.checkpoint import load_state_dict_strict

    with pytest.raises(CheckpointKeyError):
        load_state_dict_strict(model, convert_backbone_state_dict(bad, model, KEY_FILE), source=KEY_FILE)
    classifier = "module.last_linear.weight" if layout == "moments" else "fc.weight"
    bad = dict(state)
    bad[classifier] = torch.empty(400, 512, device="meta")
    with pytest.raises(InputError, match="does not take 2048-d features"):
        convert_backbone_state_dict(bad, model, KEY_FILE)


def test_check_backbone_keys_cli(tmp_path, capsys):
    assert PUBLISHED_KEY_FILE == KEY_FILE
    assert convert.main(["--check-backbone-keys"]) == 0
    out = capsys.readouterr().out
    for layout in ("moments", "kinetics"):
        assert f"resnet3d50 [{layout}]: loaded 318/318 keys, 2 classifier keys checked and dropped" in out
    bad = tmp_path / "keys.txt"
    bad.write_text(KEY_FILE.read_text().replace("module.conv1.weight\t[64, 3, 7, 7, 7]",
                                                "module.conv1.weight\t[64, 3, 3, 7, 7]"))
    with pytest.raises(SystemExit) as exit_info:
        run_cli(convert.main, ["--check-backbone-keys", str(bad)])
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(bad) in line and "conv1.weight" in line


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    return {p.stem: p for p in write_clips(tmp_path_factory.mktemp("clips"), num_frames=12, size=32)}


def _argv(clips, resume, out, *extra):
    return ["--videos", str(clips["red_right"]), str(clips["red_down"]), str(clips["blue_right"]),
            "--resume", str(resume), "--arch", "resnet3d14", "--width", "8", "--num_frames", "4",
            "--frame_size", "32", "--out", str(out), "--num_threads", "1", *extra]


def test_predict_end_to_end(clips, tmp_path, syn_dir, capsys):
    torch.manual_seed(0)
    sam = build_model("tiny")
    ckpt = tmp_path / "AbstractionEmbedding_x_best.pth.tar"
    torch.save({"epoch": 1, "best_acc1": 0.0, "state_dict": to_original_state_dict(sam.state_dict())}, ckpt)
    sam.save_pretrained(tmp_path / "pub")
    torch.manual_seed(1)
    backbone = ResNet3d(BackboneConfig(layers=(1, 1, 1, 1), width=8))
    weights = tmp_path / "backbone.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in backbone.state_dict().items()}}, weights)
    extra = ["--candidates", str(clips["candidate_red_left"]), str(clips["candidate_green_up"]),
             "--graph", str(syn_dir / "moments_graph.json"), "--backbone_weights", str(weights)]
    assert predict.main(_argv(clips, ckpt, tmp_path / "a", *extra)) == 0
    assert predict.main(_argv(clips, tmp_path / "pub", tmp_path / "b", *extra)) == 0
    a = json.loads((tmp_path / "a" / "prediction.json").read_text())
    b = json.loads((tmp_path / "b" / "prediction.json").read_text())
    assert a["abstraction"] == b["abstraction"]  # .pth.tar and save_pretrained give the same model
    assert len(a["abstraction"]) == 5 and a["abstraction"][0]["score"] >= a["abstraction"][-1]["score"]
    assert "(" in a["abstraction"][0]["node"]  # named from the graph
    assert a["odd_one_out"]["index"] in (0, 1, 2) and len(a["odd_one_out"]["distances"]) == 3
    assert sorted(c["index"] for c in a["completion"]) == [0, 1]
    assert "note" not in a
    assert (tmp_path / "a" / "prediction.png").stat().st_size > 1000
    # reference: the same numbers computed directly from the features of the sampled frames
    x = torch.stack([backbone.eval()(torch.stack([_tensor(clips[n])]))[0]
                     for n in ("red_right", "red_down", "blue_right")])
    _, logits = sam.eval()(x.unsqueeze(0))
    top = logits[0, :, -1].softmax(0).topk(5)
    assert [e["label"] for e in a["abstraction"]] == top.indices.tolist()
    assert a["abstraction"][0]["score"] == pytest.approx(float(top.values[0].detach()), rel=1e-4)
    out = capsys.readouterr().out
    assert "odd one out: " in out and "completion #1" in out


def _tensor(path: Path) -> torch.Tensor:
    from set_abstraction.scripts.extract_features import to_tensor

    frames, _ = read_clip(path, 4, 32)
    return to_tensor(frames, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
