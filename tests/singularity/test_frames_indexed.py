"""Frame-indexed decoding (issue 14): the same frame indices and pixels as decoding the whole video, for every
sampler mode and reader, without decoding the whole video; bad videos are one-line errors."""
import random
import sys
import types

import numpy as np
import pytest

from common.errors import InputError
from singularity.data import frames as F


def write_h264(path, n: int, gop: int, size=(64, 48), fps: int = 10):
    """An H.264 clip with B-frames and a keyframe every ``gop`` frames; frame k has red level 7k and a green row."""
    import av

    w, h = size
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "bf": "2"}
        for k in range(n):
            img = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
            img[:, :, 0] = (k * 7) % 256
            img[k % h, :, 1] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def h264(tmp_path_factory):
    return write_h264(tmp_path_factory.mktemp("h264") / "clip.mp4", 95, gop=12)


def old_way(path, num_frames, sample, reader, max_num_frames=-1):
    """What read_frames did before issue 14: decode everything, then index."""
    frames, fps = F.decode_video(str(path), "opencv" if reader == "opencv" else "av")
    idx = F.get_frame_indices(num_frames, len(frames), sample=sample, input_fps=fps, max_num_frames=max_num_frames)
    return frames[idx], idx


@pytest.fixture
def no_full_decode(monkeypatch):
    """Fail if the indexed path falls back to decoding the whole video."""
    def full(*args, **kwargs):
        raise AssertionError("decoded the whole video")
    monkeypatch.setattr(F, "_read_full", full)


CASES = [("middle", 1, -1), ("middle", 4, -1), ("middle", 12, -1), ("middle", 200, -1), ("rand", 1, -1),
         ("rand", 4, -1), ("rand", 12, -1), ("rand", 200, -1), ("fps1", 0, -1), ("fps3", 0, 5), ("fps0.5", 0, -1)]


@pytest.mark.parametrize("reader", ["av", "opencv"])
@pytest.mark.parametrize("sample,num_frames,max_num_frames", CASES, ids=[f"{s}-{n}-{m}" for s, n, m in CASES])
def test_indexed_equals_full_decode(h264, reader, sample, num_frames, max_num_frames):
    random.seed(7)
    np.random.seed(7)
    expected, expected_idx = old_way(h264, num_frames, sample, reader, max_num_frames)
    random.seed(7)
    np.random.seed(7)
    clip, idx = F.read_frames(str(h264), num_frames, sample, reader=reader, max_num_frames=max_num_frames)
    assert idx == expected_idx
    assert np.array_equal(clip.permute(0, 2, 3, 1).numpy(), expected)


def test_av_path_seeks_instead_of_decoding_everything(h264, no_full_decode, monkeypatch):
    import av

    decoded = []
    real = av.container.InputContainer.decode

    def counting(self, *args, **kwargs):
        for frame in real(self, *args, **kwargs):
            decoded.append(frame.pts)
            yield frame
    monkeypatch.setattr(av.container.InputContainer, "decode", counting)
    clip, idx = F.read_frames(str(h264), 1, "middle", reader="av")
    assert idx == [47] and clip.shape == (1, 3, 48, 64)
    assert len(decoded) <= 12 + 2  # one group of pictures (+ B-frame reordering), not 95 frames
    assert abs(int(clip[0, 0].float().mean()) - 47 * 7 % 256) <= 3  # red level of frame 47


def test_synthetic_clips_match(syn_dir, no_full_decode):
    path = next((syn_dir / "videos_images" / "syn_vid").glob("test_red_square_*.mp4"))
    frames, fps = F.decode_video(str(path), "av")
    clip = F.read_clip(str(path), 4, "middle", reader="av")
    assert clip.indices == [0, 2, 4, 6] and clip.vlen == 8 and clip.fps == pytest.approx(fps)
    assert np.array_equal(clip.frames, frames[[0, 2, 4, 6]])


def test_decord_reader_uses_get_batch_when_installed(h264, monkeypatch):
    """``reader: decord`` means decord when it is importable (a stand-in module here: decord is not installed)."""
    full, _ = F.decode_video(str(h264), "av")
    calls = []

    class Batch:
        def __init__(self, array):
            self.array = array

        def asnumpy(self):
            return self.array

    class VideoReader:
        def __init__(self, path, num_threads=0):
            assert num_threads == 1

        def __len__(self):
            return len(full)

        def get_avg_fps(self):
            return 10.0

        def get_batch(self, indices):
            calls.append(list(indices))
            return Batch(full[list(indices)])

    fake = types.SimpleNamespace(VideoReader=VideoReader, DECORDError=RuntimeError)
    monkeypatch.setitem(sys.modules, "decord", fake)
    monkeypatch.setattr(F, "decord_available", lambda: True)
    clip, idx = F.read_frames(str(h264), 4, "middle", reader="decord")
    assert calls == [[11, 34, 58, 82]] and idx == calls[0]
    assert np.array_equal(clip.permute(0, 2, 3, 1).numpy(), full[idx])
    monkeypatch.setattr(F, "decord_available", lambda: False)  # not installed: served by PyAV, same frames
    clip2, idx2 = F.read_frames(str(h264), 4, "middle", reader="decord")
    assert idx2 == idx and np.array_equal(clip2.numpy(), clip.numpy()) and len(calls) == 1


def _garbage(path):
    path.write_bytes(b"\x00\x01not a video at all" * 50)
    return path


def _image(path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    return path


def _image_named_mp4(path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, format="PNG")
    return path


BAD = [
    ("missing", lambda p: p / "nope.mp4", {}, "video not found"),
    ("empty", lambda p: (p / "empty.mp4").write_bytes(b"") or p / "empty.mp4", {}, "empty file"),
    ("garbage", lambda p: _garbage(p / "junk.mp4"), {}, "does not decode"),
    ("image", lambda p: _image(p / "photo.png"), {}, "is an image"),
    ("image-as-mp4", lambda p: _image_named_mp4(p / "photo.mp4"), {}, "is an image"),
    ("too-short", lambda p: write_h264(p / "short.mp4", 3, gop=3), {"min_frames": 4}, "fewer than the 4"),
]


@pytest.mark.parametrize("reader", ["av", "opencv"])
@pytest.mark.parametrize("make,kwargs,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_videos_are_one_line_errors(tmp_path, reader, make, kwargs, message):
    path = make(tmp_path)
    with pytest.raises(InputError) as err:
        F.read_frames(str(path), 4, "middle", reader=reader, **kwargs)
    text = str(err.value)
    assert path.name in text and "\n" not in text
    assert message in text, text


def test_fallback_to_full_decode_draws_the_same_random_frames(h264, monkeypatch):
    """When seeking cannot reach a sampled frame the whole video is decoded, and ``rand`` sampling re-draws from the
    same random state (the indices are still those of the old way)."""
    import av

    monkeypatch.setattr(av.container.InputContainer, "seek", lambda self, *args, **kwargs: None)
    random.seed(11)
    np.random.seed(11)
    expected, expected_idx = old_way(h264, 6, "rand", "av")
    after_old = random.random()
    random.seed(11)
    np.random.seed(11)
    clip, idx = F.read_frames(str(h264), 6, "rand", reader="av")
    assert idx == expected_idx and np.array_equal(clip.permute(0, 2, 3, 1).numpy(), expected)
    assert random.random() == after_old  # the random stream advanced exactly as before
