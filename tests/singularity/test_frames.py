"""Frame sampling (spec 3.5 examples, exact) and decoding."""
import random

import numpy as np
import pytest
import torch

from singularity.data.frames import decode_video, get_frame_indices, read_frames, read_image


def test_middle_examples():
    assert get_frame_indices(4, 20, "middle") == [2, 7, 12, 17]
    assert get_frame_indices(1, 60, "middle") == [29]


def test_rand_short_ranges_are_deterministic_and_skip_last_frame():
    random.seed(0)
    for _ in range(20):
        assert get_frame_indices(4, 8, "rand") == [0, 2, 4, 6]
    random.seed(1)
    for _ in range(50):
        idx = get_frame_indices(4, 20, "rand")
        # ranges (0,4),(5,9),(10,14),(15,19): end exclusive, the last frame of each range never drawn (9.9 K)
        for i, (lo, hi) in zip(idx, [(0, 4), (5, 9), (10, 14), (15, 19)]):
            assert lo <= i < hi


def test_padding_and_fallback():
    assert get_frame_indices(4, 2, "middle") == [0, 1, 1, 1]
    random.seed(0)
    np.random.seed(0)
    # vlen=2, n=4 -> k=2, ranges (0,0),(1,1): rand on an empty range falls back to a sorted permutation
    idx = get_frame_indices(4, 2, "rand")
    assert idx[:2] == [0, 1] and idx[2:] == [1, 1]


def test_fps_sampling():
    # 10 frames at 2 fps = 5 s; fps1 -> times 0.5..4.5 -> indices 1,3,5,7,9
    assert get_frame_indices(0, 10, "fps1", input_fps=2) == [1, 3, 5, 7, 9]
    assert get_frame_indices(0, 10, "fps1", input_fps=2, max_num_frames=2) == [1, 3]


def test_decoders_agree_on_synthetic_video(syn_dir):
    path = next((syn_dir / "videos_images" / "syn_vid").glob("test_red_square_*.mp4"))
    a, fps = decode_video(str(path), "av")
    b, _ = decode_video(str(path), "opencv")
    assert a.shape == (8, 32, 32, 3) and b.shape == a.shape
    assert fps == pytest.approx(2.0)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 8
    clip, idx = read_frames(str(path), 4, "middle", reader="decord")
    assert clip.dtype == torch.uint8 and clip.shape == (4, 3, 32, 32) and idx == [0, 2, 4, 6]
    with pytest.raises(ValueError, match="reader"):
        read_frames(str(path), 4, "middle", reader="nope")
    img = read_image(str(next((syn_dir / "videos_images" / "syn_img").glob("*.png"))))
    assert img.shape == (1, 3, 32, 32)
