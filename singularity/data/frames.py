"""Frame index sampling (spec 3.5, exact) and video/image decoding with PyAV or OpenCV (no decord)."""
from __future__ import annotations

import random
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile

ImageFile.LOAD_TRUNCATED_IMAGES = True
Image.MAX_IMAGE_PIXELS = None

VIDEO_READERS = ("decord", "av", "opencv")


def get_frame_indices(num_frames: int, vlen: int, sample: str = "rand", fix_start=None, input_fps: float = 1.0,
                      max_num_frames: int = -1) -> list[int]:
    """Frame ids for ``rand``/``middle``/``fpsX`` sampling, exactly as the original (pitfall 9.9 K)."""
    if sample in ("rand", "middle"):
        acc = min(num_frames, vlen)
        intervals = np.linspace(start=0, stop=vlen, num=acc + 1).astype(int)
        ranges = [(intervals[i], intervals[i + 1] - 1) for i in range(len(intervals) - 1)]
        if sample == "rand":
            try:
                # end exclusive: the last frame of each range is never picked (kept, spec 3.5)
                frame_indices = [random.choice(range(x[0], x[1])) for x in ranges]
            except IndexError:
                frame_indices = sorted(np.random.permutation(vlen)[:acc].tolist())
        elif fix_start is not None:
            frame_indices = [int(x[0] + fix_start) for x in ranges]
        else:
            frame_indices = [int((x[0] + x[1]) // 2) for x in ranges]
        frame_indices = [int(i) for i in frame_indices]
        if len(frame_indices) < num_frames:
            frame_indices += [frame_indices[-1]] * (num_frames - len(frame_indices))
        return frame_indices
    if sample.startswith("fps"):
        output_fps = float(sample[3:])
        duration = float(vlen) / input_fps
        delta = 1 / output_fps
        frame_seconds = np.arange(0 + delta / 2, duration + delta / 2, delta)
        frame_indices = [int(i) for i in np.around(frame_seconds * input_fps).astype(int) if i < vlen]
        if max_num_frames > 0 and len(frame_indices) > max_num_frames:
            frame_indices = frame_indices[:max_num_frames]
        return frame_indices
    raise ValueError(f"unknown sample type {sample!r} (rand, middle, fps<x>)")


def _decode_av(path: str) -> tuple[np.ndarray, float]:
    import av  # lazy: only video reading needs it (pitfall 9.14 F)

    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        duration = float(stream.duration * stream.time_base) if stream.duration else 0.0
    if not frames:
        raise RuntimeError(f"no frames decoded from {path}")
    fps = len(frames) / duration if duration > 0 else 1.0
    return np.stack(frames), fps


def _decode_opencv(path: str) -> tuple[np.ndarray, float]:
    import cv2

    cap = cv2.VideoCapture(path)
    fps = cap.get(cv2.CAP_PROP_FPS) or 1.0
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    if not frames:
        raise RuntimeError(f"no frames decoded from {path}")
    return np.stack(frames), float(fps)


_DECODED: OrderedDict = OrderedDict()


def decode_video(path: str, reader: str = "av", cache_size: int = 0) -> tuple[np.ndarray, float]:
    """All frames (N, H, W, 3) uint8 and fps; keeps the last ``cache_size`` decoded videos in memory."""
    if reader not in VIDEO_READERS:
        raise ValueError(f"video_input.reader must be one of {VIDEO_READERS}, got {reader!r}")
    key = (str(path), reader)
    if cache_size > 0 and key in _DECODED:
        _DECODED.move_to_end(key)
        return _DECODED[key]
    decoded = (_decode_opencv if reader == "opencv" else _decode_av)(str(path))
    if cache_size > 0:
        _DECODED[key] = decoded
        while len(_DECODED) > cache_size:
            _DECODED.popitem(last=False)
    return decoded


def read_frames(path: str, num_frames: int, sample: str = "rand", reader: str = "av",
                max_num_frames: int = -1, cache_size: int = 0) -> tuple[torch.Tensor, list[int]]:
    """Decode a video -> uint8 (T, 3, H, W) and the frame ids; ``decord`` is served by PyAV."""
    frames, fps = decode_video(path, reader, cache_size)
    indices = get_frame_indices(num_frames, len(frames), sample=sample, input_fps=fps, max_num_frames=max_num_frames)
    clip = torch.from_numpy(frames[indices]).permute(0, 3, 1, 2).contiguous()
    return clip, indices


def read_image(path: str) -> torch.Tensor:
    """PIL -> RGB -> uint8 (1, 3, H, W)."""
    with Image.open(path) as img:
        array = np.asarray(img.convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0)


def is_video_path(path: str) -> bool:
    """True for common video container suffixes."""
    return Path(path).suffix.lower() in {".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".gif"}
