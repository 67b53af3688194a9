"""Issue 12 items 2 and 3: temporal checkpoints set the frame count (spec 8 / pitfall 9.2), and BEiT
relative-position tables are resampled as the original (geometric offsets + bicubic spline, pitfall 9.19)."""
import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from common.errors import InputError
from singularity.convert import geometric_offsets, resample_rel_pos_table
from singularity.tasks_common import setup_model

DATA = Path(__file__).resolve().parent / "data"


def poly(u: float, v: float) -> float:
    """A bicubic polynomial of (row offset u, column offset v): an interpolating bicubic spline reproduces it."""
    return 0.5 + 0.25 * u - 0.125 * v + 0.0625 * u * v + 0.01 * u ** 3 - 0.02 * v ** 2


def test_geometric_offsets_by_hand():
    # 7 -> 9 offsets: half-widths 3 -> 4, so 1 + q + q^2 = 4, q = (sqrt(13) - 1) / 2
    q = (math.sqrt(13) - 1) / 2
    source, target = geometric_offsets(7, 9)
    assert source == pytest.approx([-(1 + q + q * q), -(1 + q), -1, 0, 1, 1 + q, 1 + q + q * q], abs=1e-5)
    assert source[-1] == pytest.approx(4.0, abs=1e-5) and target == [-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0]


def test_rel_pos_resampling_places_offsets_geometrically():
    """7x7 -> 9x9 offsets (tiny BEiT, 32 px -> 40 px at patch 8) of a table known in closed form."""
    q = (math.sqrt(13) - 1) / 2
    pos = [-(1 + q + q * q), -(1 + q), -1.0, 0.0, 1.0, 1 + q, 1 + q + q * q]
    heads = 2
    table = torch.zeros(7 * 7 + 3, heads)
    for a, u in enumerate(pos):
        for b, v in enumerate(pos):
            table[a * 7 + b, 0] = poly(u, v)
            table[a * 7 + b, 1] = -2 * poly(u, v)
    table[-3:] = torch.tensor([[7.0, 8.0], [9.0, 10.0], [11.0, 12.0]])
    out = resample_rel_pos_table(table, 9 * 9 + 3)
    assert out.shape == (84, heads) and torch.equal(out[-3:], table[-3:])  # CLS rows kept
    grid = out[:-3, 0].view(9, 9)
    expected = torch.tensor([[poly(r - 4, c - 4) for c in range(9)] for r in range(9)])
    assert torch.allclose(grid, expected, atol=1e-4)  # row offset stays the row offset (no transpose)
    assert torch.allclose(out[:-3, 1].view(9, 9), -2 * expected, atol=1e-4)  # each head on its own
    # short offsets keep their values: offset (1, -1) is source row (3+1)*7 + (3-1), target (4+1)*9 + (4-1)
    assert out[5 * 9 + 3, 0] == pytest.approx(float(table[4 * 7 + 2, 0]), abs=1e-5)
    assert out[4 * 9 + 4, 0] == pytest.approx(0.5, abs=1e-6)
    # offset 2 lies between source positions 1 and 1 + q: 0.5 + 0.25*2 + 0.01*8 = 1.08
    assert grid[6, 4] == pytest.approx(1.08, abs=1e-4)


def test_rel_pos_resampling_equals_scipy_interp2d():
    """Reference computed with SciPy 1.13.1's ``interp2d(kind='cubic')`` (removed since 1.14) on a random table."""
    ref = json.loads((DATA / "interp2d_7to9.json").read_text())
    source = torch.tensor(ref["source"])
    table = torch.cat([source.reshape(-1, 1), torch.zeros(3, 1)])
    out = resample_rel_pos_table(table, 84)
    assert torch.allclose(out[:-3, 0].view(9, 9), torch.tensor(ref["interp2d"]), atol=1e-6)


def _temporal_checkpoint(tmp_path, tiny_model_factory):
    src = tiny_model_factory("retrieval", seed=11, add_temporal_embed=True, video_input={"num_frames": 4},
                             temporal_vision_encoder={"enable": True, "num_layers": 1}).eval()
    with torch.no_grad():
        src.temporal_embeddings.copy_(torch.randn_like(src.temporal_embeddings))  # 4 learned, distinct rows
    path = tmp_path / "ft_msrvtt_singularity_temporal_5m.pth"
    torch.save({"model": src.state_dict()}, path)
    return src, path


def _one_frame_config(path, **extra):
    cfg = {"vit_config": "configs/beit_tiny.json", "bert_config": "configs/config_bert_tiny.json", "image_res": 32,
           "embed_dim": 32, "video_input": {"num_frames": 1, "num_frames_test": 4}, "add_temporal_embed": False,
           "temporal_vision_encoder": {"enable": False, "num_layers": 2}, "pretrained_path": str(path)}
    cfg.update(extra)
    return OmegaConf.create(cfg)


def test_temporal_checkpoint_sets_frames_and_each_frame_gets_its_embedding(tmp_path, tiny_model_factory, caplog):
    src, path = _temporal_checkpoint(tmp_path, tiny_model_factory)
    cfg = _one_frame_config(path)  # the ret_*.yaml defaults: 1 frame, temporal flags off
    with caplog.at_level("INFO", logger="singularity"):
        model, _ = setup_model("retrieval", cfg, torch.device("cpu"))
    assert cfg.video_input.num_frames == 4 and model.temporal_embeddings.shape[1] == 4
    assert "'video_input.num_frames': 4" in caplog.text  # inferred and logged
    assert torch.equal(model.temporal_embeddings, src.temporal_embeddings)
    clip = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        want, _ = src.encode_image(clip)
        got, _ = model.eval().encode_image(clip)
    assert torch.allclose(got, want, atol=1e-6)


def test_temporal_truncation_is_explicit_and_logged(tmp_path, tiny_model_factory, caplog):
    _, path = _temporal_checkpoint(tmp_path, tiny_model_factory)
    cfg = _one_frame_config(path, resize_learned_tables=True, video_input={"num_frames": 1, "num_frames_test": 1})
    with caplog.at_level("INFO", logger="singularity"):
        model, _ = setup_model("retrieval", cfg, torch.device("cpu"))
    assert model.temporal_embeddings.shape[1] == 1
    line = next(r.getMessage() for r in caplog.records if "loaded" in r.getMessage())
    assert "resized learned tables: temporal_embeddings: 4 -> 1 frames (truncated)" in line  # not a clean load
    # evaluating 12 frames with 4 learned embeddings: the original interpolated silently; here it needs the flag
    with pytest.raises(InputError, match="video_input.num_frames_test.*interpolate the model's 4 learned"):
        setup_model("retrieval", _one_frame_config(path, video_input={"num_frames": 1, "num_frames_test": 12}),
                    torch.device("cpu"))
