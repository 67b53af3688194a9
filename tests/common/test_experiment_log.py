"""common.experiment_log + common.plot_metrics: one metrics.jsonl schema, TensorBoard mirror, curves PNG."""
from __future__ import annotations

import argparse
import json
import struct

import numpy as np
import pytest

from common.errors import InputError
from common.experiment_log import ExperimentLog, add_report_to_flag, read_metrics
from common.plot_metrics import main as plot_main


def _tensorboard_scalars(directory):
    from tensorboardX.proto import event_pb2

    scalars = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, round(value.simple_value, 5)))
    return scalars


def test_metrics_jsonl_schema_and_tensorboard_mirror(tmp_path):
    with ExperimentLog(tmp_path, report_to=["tensorboard"]) as log:
        for step in range(1, 4):
            log.log({"loss": 1.0 / step}, step=step, epoch=0)
        log.log({"CIDEr": 0.5, "loss": 0.7}, step=3, epoch=0, split="val")
    records = read_metrics(tmp_path)
    assert [(r["step"], r["split"], r["name"]) for r in records] == [
        (1, "train", "loss"), (2, "train", "loss"), (3, "train", "loss"), (3, "val", "CIDEr"), (3, "val", "loss")]
    assert set(records[0]) == {"step", "epoch", "split", "name", "value", "time"}
    assert records[1]["value"] == 0.5 and records[0]["epoch"] == 0
    scalars = _tensorboard_scalars(tmp_path / "tensorboard")
    assert scalars["loss"] == [(1, 1.0), (2, 0.5), (3, 0.33333)]
    assert scalars["val/CIDEr"] == [(3, 0.5)] and scalars["val/loss"] == [(3, 0.7)]


def test_bad_values_and_flags_are_errors(tmp_path):
    log = ExperimentLog(tmp_path)
    with pytest.raises(ValueError, match="'loss' at step 5 is nan"):
        log.log({"loss": float("nan")}, step=5)
    with pytest.raises(ValueError, match="split"):
        log.log({"loss": 1.0}, step=5, split="dev")
    parser = add_report_to_flag(argparse.ArgumentParser())
    assert parser.parse_args(["--report_to", "tensorboard,wandb"]).report_to == ("tensorboard", "wandb")
    assert parser.parse_args([]).report_to == ()
    with pytest.raises(SystemExit):
        parser.parse_args(["--report_to", "tensorbord"])
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "split": "train", "name": "loss", "value": 1, "time": 0}\n{"step": 2\n')
    with pytest.raises(InputError, match="line 2"):
        read_metrics(tmp_path)


def test_plot_metrics_draws_the_curves_of_two_runs(tmp_path):
    rng = np.random.default_rng(0)
    for run in ("a", "b"):
        log = ExperimentLog(tmp_path / run)
        for step in range(0, 50, 5):
            log.log({"loss": 2.0 * np.exp(-step / 20) + 0.05 * rng.random()}, step=step)
            if step % 10 == 0:
                log.log({"accuracy": step / 50}, step=step, split="val")
    out = tmp_path / "curves.png"
    assert plot_main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    import matplotlib.image as mpimg
    image = mpimg.imread(out)
    assert image.shape[0] > 200 and image.shape[1] > 600  # two panels side by side
    assert (image[..., :3] < 0.5).mean() > 0.005  # something dark was drawn
    with pytest.raises(SystemExit):  # never overwrites silently
        plot_main([str(tmp_path / "a"), "--out", str(out)])
    assert json.loads((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[0])["name"] == "loss"
