"""Synthetic video clips for ``make set_abstraction-predict`` and the decoding tests.

``python -m set_abstraction.clips --out DIR`` writes small H.264 ``.mp4`` clips (PyAV): a coloured square
moving across a plain background. Three share a colour and differ in direction; one is another colour
(the odd one); two more are completion candidates.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.errors import InputError, run_cli
from common.threads import add_num_threads_flag, apply_num_threads

CLIPS = {
    "red_right": ((220, 40, 40), (1, 0)),
    "red_down": ((220, 40, 40), (0, 1)),
    "red_diagonal": ((220, 40, 40), (1, 1)),
    "blue_right": ((40, 60, 220), (1, 0)),
    "candidate_red_left": ((220, 40, 40), (-1, 0)),
    "candidate_green_up": ((40, 200, 60), (0, -1)),
}


def clip_frames(colour: Sequence[int], direction: Sequence[int], num_frames: int = 32, size: int = 64,
                value_ramp: bool = False) -> np.ndarray:
    """[T, size, size, 3] uint8: a square of ``colour`` moving along ``direction`` (wrapping around).

    ``value_ramp`` makes frame t a uniform grey of value 4 + 5 t instead (its identity is visible in its
    mean; up to t = 50).
    """
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    side = size // 4
    for t in range(num_frames):
        if value_ramp:
            frames[t] = min(255, 4 + 5 * t)
            continue
        frames[t] = (235, 235, 225)
        y = (size // 2 - side // 2 + direction[1] * t * 2) % (size - side)
        x = (size // 2 - side // 2 + direction[0] * t * 2) % (size - side)
        frames[t, y:y + side, x:x + side] = colour
    return frames


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = 10, gop: int = 8) -> Path:
    """Encode ``frames`` ([T, H, W, 3] RGB uint8) as H.264 (keyframe every ``gop`` frames, B-frames on)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"crf": "12", "bf": "2", "keyint_min": str(gop), "sc_threshold": "0"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_clips(out: str | Path, num_frames: int = 32, size: int = 64) -> list[Path]:
    """Write the CLIPS set into ``out``; returns the paths (existing files are replaced)."""
    out = Path(out)
    return [write_mp4(out / f"{name}.mp4", clip_frames(colour, direction, num_frames, size))
            for name, (colour, direction) in CLIPS.items()]


def main(argv: Sequence[str] | None = None) -> int:
    """Write the synthetic clips."""
    p = argparse.ArgumentParser(prog="python -m set_abstraction.clips", description=__doc__)
    p.add_argument("--out", required=True, help="directory to write the .mp4 clips into")
    p.add_argument("--num_frames", type=int, default=32, help="frames per clip")
    p.add_argument("--size", type=int, default=64, help="frame width and height (even)")
    add_num_threads_flag(p)
    args = p.parse_args(argv)
    apply_num_threads(args.num_threads)
    if args.size < 8 or args.size % 2:
        raise InputError("--size", "must be an even number >= 8 (H.264 4:2:0)")
    for path in write_clips(args.out, args.num_frames, args.size):
        print(path)
    return 0


if __name__ == "__main__":
    run_cli(main)
