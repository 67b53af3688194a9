"""python -m visualcomet.predict on an image (issue 13): JSON of intent/before/after inferences and a PNG; bad
images, metadata, events and weight files give one line and exit 2 without touching existing outputs."""
from __future__ import annotations

import json
import os
import pickle

import pytest

from common.errors import run_cli
from common.regions.detectors import Detectron2Config
from common.regions.trunk import TrunkConfig
from common.regions.weights import random_state, write_random_weights
from visualcomet import predict as vp



@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    import matplotlib.cbook

    inputs = vp.write_demo_inputs(tmp_path_factory.mktemp("vc_predict"))
    inputs["image"] = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return inputs


def _argv(demo, out, **over):
    args = {"--image": str(demo["image"]), "--metadata": str(demo["metadata"]), "--event": "1 is giving a talk",
            "--place": "in a lecture hall", "--model_name_or_path": str(demo["model"]),
            "--detector_weights": str(demo["weights"]), "--num_samples": "2", "--length": "6",
            "--output_dir": str(out)}
    args.update({k: str(v) for k, v in over.items()})
    return [x for kv in args.items() for x in kv]


def test_predict_writes_inferences_json_and_png(demo, tmp_path, capsys):
    run_cli(vp.main, _argv(demo, tmp_path / "out"))
    result = json.loads((tmp_path / "out" / "grace_hopper_inferences.json").read_text())
    assert result["event"] == "1 is giving a talk" and result["place"] == "in a lecture hall"
    assert all(len(result[rel]) == 2 and all(isinstance(s, str) for s in result[rel]) for rel in vp.RELATIONS)
    png = (tmp_path / "out" / "grace_hopper.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "wrote" in capsys.readouterr().out


class _Pwn:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _meta(demo, tmp_path, **changes):
    meta = json.loads(demo["metadata"].read_text())
    for k, v in changes.items():
        if v is None:
            meta.pop(k)
        else:
            meta[k] = v
    path = tmp_path / "meta.json"
    path.write_text(json.dumps(meta))
    return path


def _case(name, demo, tmp_path):
    if name == "missing-image":
        return {"--image": tmp_path / "absent.jpg"}, "absent.jpg", "image"
    if name == "unreadable-image":
        (tmp_path / "fake.jpg").write_text("hello")
        return {"--image": tmp_path / "fake.jpg"}, "fake.jpg", "image"
    if name == "metadata-without-boxes":
        return {"--metadata": _meta(demo, tmp_path, boxes=None)}, "meta.json", "boxes"
    if name == "metadata-without-names":
        return {"--metadata": _meta(demo, tmp_path, names=None)}, "meta.json", "names"
    if name == "box-outside-image":
        return ({"--metadata": _meta(demo, tmp_path, boxes=[[20, 15, 500, 602.5], [220, 380, 300, 560]])},
                "meta.json", "record 0: field 'boxes'")
    if name == "box-x2-before-x1":
        return ({"--metadata": _meta(demo, tmp_path, boxes=[[20, 15, 500, 600], [300, 380, 220, 560]])},
                "meta.json", "record 1: field 'boxes'")
    if name == "event-person-out-of-range":
        return {"--event": "3 is talking to 1"}, "grace_hopper.json", "event"
    if name == "weights-wrong-layout":
        return ({"--detector_weights": write_random_weights(tmp_path / "bua.pth", "bottom_up")}, "bua.pth",
                "field 'model'")
    if name == "weights-code-pickle":
        path = tmp_path / "evil.pkl"
        path.write_bytes(pickle.dumps({"model": {"w": _Pwn(tmp_path / "pwned")}}, protocol=2))
        return {"--detector_weights": path}, "evil.pkl", "os.system"
    if name == "feature-width-mismatch":
        cfg = Detectron2Config(trunk=TrunkConfig(stem_channels=8, res2_channels=8, bottleneck_channels=4))
        path = tmp_path / "narrow.pkl"
        path.write_bytes(pickle.dumps({"model": {k: v.numpy() for k, v in random_state(cfg).items()}}, protocol=2))
        return {"--detector_weights": path}, "narrow.pkl", "feature_dim"
    if name == "output-exists":
        return {}, "grace_hopper_inferences.json", "--overwrite"
    raise AssertionError(name)


CASES = ["missing-image", "unreadable-image", "metadata-without-boxes", "metadata-without-names", "box-outside-image",
         "box-x2-before-x1", "event-person-out-of-range", "weights-wrong-layout", "weights-code-pickle",
         "feature-width-mismatch", "output-exists"]


@pytest.mark.parametrize("name", CASES, ids=CASES)
def test_bad_inputs_one_line_exit_2_outputs_untouched(demo, tmp_path, name, capsys):
    out = tmp_path / "out"
    out.mkdir()
    earlier = "grace_hopper_inferences.json" if name == "output-exists" else "earlier.json"
    (out / earlier).write_text("earlier result")
    (out / "other.png").write_bytes(b"earlier picture")
    over, needle_file, needle = _case(name, demo, tmp_path)
    with pytest.raises(SystemExit) as exc:
        run_cli(vp.main, _argv(demo, out, **over))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and needle_file in err and needle in err, err
    assert (out / earlier).read_text() == "earlier result"
    assert (out / "other.png").read_bytes() == b"earlier picture"
    assert sorted(p.name for p in out.iterdir()) == sorted([earlier, "other.png"])
    assert not (tmp_path / "pwned").exists()
