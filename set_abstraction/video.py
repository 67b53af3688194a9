"""Frame-indexed video decoding: only the frames the sampler picks are decoded (issue 14).

The sampler is the one ``extract_features.py`` always used: ``num_frames`` indices spread uniformly over
the video's frames, ``linspace(0, total - 1, num_frames).round()``. Readers, best first:

- ``decord``: ``VideoReader.get_batch(indices)`` (when decord is installed);
- ``pyav``: demux the packets once (no decoding) for the frame count and the keyframes, then for each
  wanted frame seek to the keyframe at or before it and decode forward; frames of the same group of
  pictures are decoded in one pass;
- ``opencv``: the last resort, two sequential passes (``grab`` to count, then ``retrieve`` only the wanted
  frames): no whole-video buffer, but every frame is still decoded.

Every reader returns RGB ``uint8`` frames ``[T, H, W, 3]`` and the video's frame count. Files that do not
decode, are empty, are images, or hold fewer frames than asked raise a one-line ``InputError``.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import InputError

READERS = ("auto", "decord", "pyav", "opencv")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "gif", "webp_pipe", "tiff_pipe", "gif_pipe")


def sample_indices(total: int, num_frames: int) -> np.ndarray:
    """``num_frames`` frame indices spread uniformly over ``total`` frames (repeats when total < num_frames)."""
    return np.linspace(0, total - 1, num_frames).round().astype(int)


def available_reader(choice: str = "auto") -> str:
    """The reader ``choice`` names, or for ``auto`` the best installed one (decord, pyav, opencv)."""
    if choice not in READERS:
        raise ValueError(f"reader must be one of {READERS}, got {choice!r}")
    modules = {"decord": "decord", "pyav": "av", "opencv": "cv2"}
    if choice != "auto":
        if importlib.util.find_spec(modules[choice]) is None:
            raise InputError("--reader", f"{choice} is not installed (pip install {modules[choice]})")
        return choice
    for name in ("decord", "pyav", "opencv"):
        if importlib.util.find_spec(modules[name]) is not None:
            return name
    raise InputError("--reader", "no video reader installed (pip install av, decord or opencv-python-headless)")


def _reason(err: Exception) -> str:
    """FFmpeg's reason without the file name it repeats."""
    return getattr(err, "strerror", None) or str(err).splitlines()[0]


@dataclass
class Clip:
    """Sampled RGB frames [T, H, W, 3] uint8, their indices and the video's frame count."""

    frames: np.ndarray
    indices: np.ndarray
    total: int


def check_video_file(path: Path) -> None:
    """Refuse missing, empty and image files before any decoder sees them."""
    if not path.is_file():
        raise InputError(path, "video not found")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes), not a video")
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        raise InputError(path, f"is an image ({path.suffix}), a video was expected")


def _pick(total: int, num_frames: int, path: Path, allow_short: bool) -> np.ndarray:
    if total < 1:
        raise InputError(path, "no frame could be decoded")
    if total < num_frames and not allow_short:
        raise InputError(path, f"has {total} frame(s), fewer than the {num_frames} requested (--num_frames)")
    return sample_indices(total, num_frames)


def read_pyav(path: Path, num_frames: int, allow_short: bool = False) -> Clip:
    """Seek to the keyframe at or before each wanted frame and decode forward to it."""
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise InputError(path, f"does not decode as a video ({_reason(err)})") from None
    with container:
        if container.format.name in IMAGE_FORMATS:
            raise InputError(path, f"is an image ({container.format.name}), a video was expected")
        if not container.streams.video:
            raise InputError(path, "has no video stream")
        stream = container.streams.video[0]
        try:
            # One demux pass (no decoding): presentation timestamps and keyframe flags of every frame.
            packets = [(p.pts if p.pts is not None else p.dts, p.is_keyframe)
                       for p in container.demux(stream) if p.size > 0]
        except av.FFmpegError as err:
            raise InputError(path, f"does not decode as a video ({_reason(err)})") from None
        if not packets or any(pts is None for pts, _ in packets):
            # No timestamps to seek by: decode sequentially, keeping only the wanted frames.
            return _read_pyav_sequential(path, num_frames, allow_short)
        order = sorted(range(len(packets)), key=lambda i: packets[i][0])
        pts_of = [packets[i][0] for i in order]  # pts of the k-th frame in presentation order
        keyframes = sorted(pts for pts, key in packets if key)
        indices = _pick(len(pts_of), num_frames, path, allow_short)
        wanted = sorted(set(int(i) for i in indices))
        wanted_set = set(wanted)
        decoded: dict[int, np.ndarray] = {}
        frame_iter = None
        position = None  # pts of the last decoded frame in the current forward pass
        index_of_pts = {pts: k for k, pts in enumerate(pts_of)}
        try:
            for k in wanted:
                target = pts_of[k]
                key_before = max((p for p in keyframes if p <= target), default=None)
                if frame_iter is None or position is None or position >= target or (
                        key_before is not None and key_before > position):
                    container.seek(target, stream=stream, backward=True, any_frame=False)
                    frame_iter = container.decode(stream)
                    position = None
                for frame in frame_iter:
                    position = frame.pts
                    if index_of_pts.get(frame.pts) in wanted_set:
                        decoded[index_of_pts[frame.pts]] = frame.to_ndarray(format="rgb24")
                    if frame.pts >= target:
                        break
                if k not in decoded:
                    raise InputError(path, f"frame {k} of {len(pts_of)} could not be decoded")
        except av.FFmpegError as err:
            raise InputError(path, f"does not decode as a video ({_reason(err)})") from None
    return Clip(np.stack([decoded[int(i)] for i in indices]), indices, len(pts_of))


def _read_pyav_sequential(path: Path, num_frames: int, allow_short: bool) -> Clip:
    import av

    with av.open(str(path)) as container:
        total = sum(1 for _ in container.decode(video=0))
    indices = _pick(total, num_frames, path, allow_short)
    wanted = set(int(i) for i in indices)
    decoded = {}
    with av.open(str(path)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k in wanted:
                decoded[k] = frame.to_ndarray(format="rgb24")
    return Clip(np.stack([decoded[int(i)] for i in indices]), indices, total)


def read_decord(path: Path, num_frames: int, allow_short: bool = False) -> Clip:
    """decord's random access: ``get_batch`` of the sampled indices."""
    import decord

    try:
        reader = decord.VideoReader(str(path))
    except decord.DECORDError as err:
        raise InputError(path, f"does not decode as a video ({str(err).splitlines()[0]})") from None
    indices = _pick(len(reader), num_frames, path, allow_short)
    return Clip(reader.get_batch(list(indices)).asnumpy(), indices, len(reader))


def read_opencv(path: Path, num_frames: int, allow_short: bool = False) -> Clip:
    """Two sequential passes; only the wanted frames are converted and kept."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        total = 0
        while capture.grab():
            total += 1
    finally:
        capture.release()
    indices = _pick(total, num_frames, path, allow_short)
    wanted = set(int(i) for i in indices)
    decoded = {}
    capture = cv2.VideoCapture(str(path))
    try:
        for k in range(total):
            if not capture.grab():
                break
            if k in wanted:
                ok, frame = capture.retrieve()
                if ok:
                    decoded[k] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()
    missing = wanted - set(decoded)
    if missing:
        raise InputError(path, f"frame {min(missing)} of {total} could not be decoded")
    return Clip(np.stack([decoded[int(i)] for i in indices]), indices, total)


def read_frames(path: str | Path, num_frames: int, reader: str = "auto", allow_short: bool = False) -> Clip:
    """The sampled frames of one video with the chosen (or best installed) reader."""
    path = Path(path)
    check_video_file(path)
    if num_frames < 1:
        raise InputError("--num_frames", "must be >= 1")
    name = available_reader(reader)
    return {"decord": read_decord, "pyav": read_pyav, "opencv": read_opencv}[name](path, num_frames, allow_short)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """[T, H, W, 3] -> [T, size, size, 3] with area interpolation (as the original pipeline's resize)."""
    import cv2

    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
