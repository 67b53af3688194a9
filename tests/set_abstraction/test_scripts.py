"""Entry points: original script paths and python -m, --help, download_data, extract_features, CLI errors."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from set_abstraction import cfg, convert, demo, predict, synthetic
from set_abstraction.data import FeatureStore
from set_abstraction.scripts import download_data, extract_features

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.mark.parametrize("parser", [cfg.build_parser(), download_data.build_parser(), extract_features.build_parser(),
                                    convert.build_parser(), synthetic.build_parser(), demo.build_parser(),
                                    predict.build_parser()])
def test_help_explains_every_flag(parser):
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, action.option_strings
    assert parser.format_help()


def test_download_from_local_mirror(syn_dir, tmp_path, capsys):
    dest = tmp_path / "metadata"
    argv = ["--datasets", "kinetics", "--datatypes", "graph", "abstraction_sets", "--splits", "val", "test",
            "--root_url", str(syn_dir), "--data_dir", str(dest)]
    assert download_data.main(argv) == 0
    assert sorted(p.name for p in dest.iterdir()) == [
        "kinetics_graph.json", "kinetics_human_abstraction_sets.json", "kinetics_val_abstraction_sets.json"]
    assert (dest / "kinetics_graph.json").read_bytes() == (syn_dir / "kinetics_graph.json").read_bytes()
    (dest / "kinetics_graph.json").write_text("local edit")
    assert download_data.main(argv) == 0
    assert "exists, skipping" in capsys.readouterr().out
    assert (dest / "kinetics_graph.json").read_text() == "local edit"
    assert download_data.main(argv + ["--overwrite", "--root_url", syn_dir.as_uri()]) == 0
    assert (dest / "kinetics_graph.json").read_bytes() == (syn_dir / "kinetics_graph.json").read_bytes()
    # moments_test_embeddings.pth is requested by the original too but never existed (spec 2.2)
    assert download_data.main(["--datasets", "moments", "--datatypes", "embeddings", "--splits", "test",
                               "--root_url", str(syn_dir), "--data_dir", str(dest)]) == 1
    assert "moments_test_embeddings.pth" in capsys.readouterr().err
    assert not list(dest.glob("*.part"))


def test_download_file_names():
    names = download_data.file_names(["moments"], list(download_data.DATATYPES), ["train", "test"])
    assert "moments_human_abstraction_sets.json" in names and "moments_test_abstraction_sets.json" not in names
    assert "resnet3d50_moments_test_features.pth" in names
    assert names.count("moments_graph.json") == 1
    assert "AbstractionEmbedding_moments_SAM_1-2-3-4_best.pth.tar" in names


def _write_video(path: Path, frames: int, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for t in range(frames):
        writer.write(np.full((24, 32, 3), (value + 20 * t) % 255, np.uint8))
    writer.release()


def test_extract_features_writes_loadable_cache(tmp_path):
    videos = tmp_path / "videos"
    _write_video(videos / "juggling" / "a.avi", 6, 10)
    _write_video(videos / "juggling" / "b.avi", 9, 60)
    _write_video(videos / "swimming" / "c.avi", 5, 120)
    out = tmp_path / "metadata"
    argv = ["--video_dir", str(videos), "--dataset", "kinetics", "--split", "val", "--out_dir", str(out),
            "--arch", "resnet3d14", "--width", "4", "--num_frames", "4", "--frame_size", "32", "--batch_size", "2"]
    assert extract_features.main(argv) == 0
    lines = (out / "kinetics_val_listfile.txt").read_text().splitlines()
    assert lines == ["juggling/a 6 0", "juggling/b 9 0", "swimming/c 5 1"]
    store = FeatureStore(out / "resnet3d50_kinetics_val_features.pth", "kinetics",
                         listfile_path=out / "kinetics_val_listfile.txt")
    assert store.features.shape == (3, 128) and store.row("swimming/c.mp4") == 2
    assert torch.all(store.features >= 0)  # pooled post-ReLU features, like the released ones
    from common.errors import InputError

    with pytest.raises(InputError, match="already exists"):
        extract_features.main(argv)


def test_extract_features_loads_weights(tmp_path):
    from set_abstraction.backbone import build_backbone

    videos = tmp_path / "v"
    _write_video(videos / "x.avi", 4, 30)
    model = build_backbone("resnet3d14", 4)
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, tmp_path / "w.pth")
    base = ["--video_dir", str(videos), "--arch", "resnet3d14", "--width", "4", "--num_frames", "2",
            "--frame_size", "16", "--weights", str(tmp_path / "w.pth")]
    assert extract_features.main(base + ["--out_dir", str(tmp_path / "a")]) == 0
    assert extract_features.main(base + ["--out_dir", str(tmp_path / "b"), "--seed", "5"]) == 0
    a = torch.load(tmp_path / "a" / "resnet3d50_moments_test_features.pth", weights_only=True)
    b = torch.load(tmp_path / "b" / "resnet3d50_moments_test_features.pth", weights_only=True)
    torch.testing.assert_close(a, b)  # the given weights, not the seed, decide the features


def test_scripts_run_from_subproject_dir_and_as_module(syn2048_dir, tmp_path):
    work = tmp_path / "w"
    (tmp_path / "m.json").write_text('{"in_features": 2048, "out_features": 16, "num_nodes": 27, '
                                     '"embedding_dim": 300, "bottleneck_dim": 8, "scales": [1, 2, 3, 4]}')
    run = subprocess.run([PY, "train.py", "--metadata_dir", str(syn2048_dir), "--num_epochs", "1", "--max_step", "1",
                          "-b", "8", "--num_workers", "0", "--model_config", str(tmp_path / "m.json"),
                          "--checkpoint_dir", str(work / "c"), "--log_dir", str(work / "l"),
                          "--output_dir", str(work / "o")],
                         cwd=REPO / "set_abstraction", env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    ckpt = next((work / "c").rglob("*_checkpoint.pth.tar"))
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in syn2048_dir.iterdir():
        (bad / f.name).symlink_to(f)
    (bad / "moments_graph.json").unlink()
    (bad / "moments_graph.json").write_text('{"nodes": [{"id": "root"}], "links": []}')
    run = subprocess.run([PY, "-m", "set_abstraction.test", "--metadata_dir", str(bad), "--resume", str(ckpt),
                          "--model_config", str(tmp_path / "m.json"), "--num_workers", "0",
                          "--log_dir", str(work / "l2"), "--checkpoint_dir", str(work / "c2"),
                          "--output_dir", str(work / "o2")],
                         cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        f"error: {bad / 'moments_graph.json'}: record root: field 'label': every node needs an int 'label'")


def test_torchvision_arch_refused_clearly_without_torchvision(tmp_path, monkeypatch):
    from common.errors import InputError

    _write_video(tmp_path / "v" / "x.avi", 3, 0)
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails as on this project's CPU stack
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(InputError, match="--arch: arch 'r3d_18' needs torchvision"):
        extract_features.main(["--video_dir", str(tmp_path / "v"), "--arch", "tv_r3d_18", "--out_dir", str(tmp_path)])
