"""Singularity video decoding: the whole video decoded then indexed (the old way) vs frame-indexed decoding.

``python benchmarks/video_decode.py`` writes (once) a 60 s 640x360 H.264 clip (30 fps, a keyframe every
``--gop`` frames: 60 = 2 s, the usual streaming setting; x264's own default is 250) and prints ONE table: for 1,
4 and 12 frames sampled as evaluation does (``middle``), the wall and CPU seconds and the peak RSS of each
reader, each measured in a fresh child process (``--repeat`` times, best wall time kept). "RSS added" is the
peak minus the process's RSS just before decoding (interpreter, torch and PyAV already loaded), the memory the
decoding itself costs.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WIDTH, HEIGHT, FPS, SECONDS = 640, 360, 30, 60
PATHS = {
    "full decode (old)": ("full", "av"),
    "frame-indexed PyAV": ("indexed", "av"),
    "frame-indexed OpenCV": ("indexed", "opencv"),
}


def write_clip(path: Path, gop: int) -> None:
    """Moving bars over a gradient with some noise, libx264 yuv420p, one keyframe every ``gop`` frames."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 24, size=(8, HEIGHT, WIDTH, 3), dtype=np.uint8)
    ramp = np.linspace(0, 160, WIDTH, dtype=np.uint8)[None, :, None]
    tmp = path.with_name(path.stem + ".part.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "preset": "veryfast"}
        for k in range(FPS * SECONDS):
            img = np.broadcast_to(ramp, (HEIGHT, WIDTH, 3)).copy()
            x = (k * 7) % (WIDTH - 80)
            img[60:300, x:x + 80] = (200, 40 + k % 200, 90)
            img += noise[k % 8]
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)


def rss_mb() -> float:
    """Current resident set size (Linux /proc), else the peak so far."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, reader: str, frames: int, clip: str) -> None:
    """One measurement in this process: print wall/CPU seconds and RSS as JSON."""
    import av  # noqa: F401  (loaded before the baseline RSS, as in a training process)

    from singularity.data import frames as F

    before = rss_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    if mode == "full":
        out = F._read_full(clip, reader, frames, "middle", -1, 0)
    else:
        out = F.read_clip(clip, frames, "middle", reader=reader)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall": wall, "cpu": cpu, "peak": peak, "added": peak - before, "indices": out.indices,
                      "shape": list(out.frames.shape)}))


def measure(mode: str, reader: str, frames: int, clip: Path, repeat: int) -> dict:
    best = None
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    for _ in range(repeat):
        res = subprocess.run([sys.executable, __file__, "--child", mode, reader, str(frames), str(clip)],
                             capture_output=True, text=True, env=env, check=False)
        if res.returncode != 0:
            raise SystemExit(f"measurement {mode}/{reader}/{frames} failed:\n{res.stderr.strip()}")
        row = json.loads(res.stdout.strip().splitlines()[-1])
        best = row if best is None or row["wall"] < best["wall"] else best
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default=None,
                        help="H.264 clip to use (default: runs/bench/video_decode_60s_g<GOP>.mp4, written when absent)")
    parser.add_argument("--gop", type=int, default=60, help="keyframe interval of the generated clip (60 = 2 s)")
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 4, 12], help="sampled frame counts")
    parser.add_argument("--repeat", type=int, default=2, help="child processes per measurement; best wall kept")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "READER", "FRAMES", "CLIP"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, reader, frames, clip = args.child
        child(mode, reader, int(frames), clip)
        return 0
    clip = Path(args.clip or f"runs/bench/video_decode_60s_g{args.gop}.mp4")
    if not clip.is_file():
        if args.clip:
            raise SystemExit(f"error: {clip}: video not found")
        clip.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        write_clip(clip, args.gop)
        print(f"wrote {clip} ({clip.stat().st_size / 2**20:.1f} MiB, {SECONDS} s {WIDTH}x{HEIGHT} {FPS} fps H.264, "
              f"keyframe every {args.gop} frames) in {time.perf_counter() - start:.1f} s")
    rows = []
    for frames in args.frames:
        results = {name: measure(mode, reader, frames, clip, args.repeat) for name, (mode, reader) in PATHS.items()}
        base = results["full decode (old)"]
        for name, res in results.items():
            if res["indices"] != base["indices"]:
                raise SystemExit(f"{name} picked frames {res['indices']}, the full decode {base['indices']}")
            rows.append((frames, name, res, base))
    print(f"\n{clip}: sample_type middle, best of {args.repeat} child processes, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', '1')}")
    head = (f"{'frames':>6}  {'path':<22} {'wall s':>8} {'CPU s':>7} {'peak RSS MB':>12} {'RSS added MB':>13} "
            f"{'time x':>7} {'added-RSS x':>11}")
    print(head)
    print("-" * len(head))
    for frames, name, res, base in rows:
        print(f"{frames:>6}  {name:<22} {res['wall']:>8.3f} {res['cpu']:>7.3f} {res['peak']:>12.0f} "
              f"{res['added']:>13.1f} {base['wall'] / res['wall']:>7.1f} "
              f"{base['added'] / max(res['added'], 0.1):>11.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
