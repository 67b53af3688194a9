"""Resize (shorter side) and reduce the fps of videos / resize images (spec 2.3, ``preprocess/compress.py``).

Videos are re-encoded with PyAV (libx264, audio dropped, even dimensions), the original's ffmpeg filter
``scale='if(gt(a,1),trunc(oh*a/2)*2,SIZE)':'if(gt(a,1),SIZE,trunc(ow*a/2)*2)' -r FPS``; ``--trim_seconds``
keeps only the first N seconds (DiDeMo ``didemo_2fps_360_trimed30``). Images: PIL resize, shorter side = size.
Existing outputs are skipped; after the pool, any missing or empty output is replaced by a copy of its input.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from functools import partial
from multiprocessing import Pool
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the monorepo importable (absolute imports only)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tqdm import tqdm

from common.errors import InputError, run_cli
from common.threads import add_num_threads_flag, apply_num_threads


def output_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(w, h) with the shorter side = ``size`` and the other side rounded down to an even number."""
    if width > height:  # landscape: height = size
        return int(width * size / height) // 2 * 2, size
    return size, int(height * size / width) // 2 * 2


def compress_video(src: str, dst: str, size: int, fps: int, trim_seconds: float | None = None) -> None:
    """Re-encode one video at ``fps`` with the shorter side ``size``."""
    import av

    with av.open(src) as inp:
        stream = inp.streams.video[0]
        w, h = output_size(stream.codec_context.width, stream.codec_context.height, size)
        with av.open(dst, mode="w") as out:
            enc = out.add_stream("libx264", rate=fps)
            enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
            next_t, step = 0.0, 1.0 / fps
            for frame in inp.decode(stream):
                t = float(frame.pts * stream.time_base) if frame.pts is not None else next_t
                if trim_seconds is not None and t >= trim_seconds:
                    break
                if t + 1e-6 < next_t:
                    continue
                next_t += step
                img = frame.to_image().resize((w, h))
                for packet in enc.encode(av.VideoFrame.from_image(img).reformat(format="yuv420p")):
                    out.mux(packet)
            for packet in enc.encode():
                out.mux(packet)


def compress_image(src: str, dst: str, size: int) -> None:
    """PIL resize so that the shorter side = ``size`` (default resampling), same file name."""
    from PIL import Image

    with Image.open(src) as img:
        w, h = img.size
        scale = size / min(w, h)
        img.resize((int(w * scale), int(h * scale))).save(dst)


def _one(pair: tuple[str, str], file_type: str, size: int, fps: int, trim_seconds: float | None) -> str | None:
    src, dst = pair
    if Path(dst).exists():
        return None
    try:
        if file_type == "video":
            compress_video(src, dst, size, fps, trim_seconds)
        else:
            compress_image(src, dst, size)
    except Exception as err:  # any decoder error: reported; the input is copied after the pool (original rule)
        return f"{src}: {err}"
    return None


def prepare_pairs(input_root: str, output_root: str, names: list[str]) -> list[tuple[str, str]]:
    """(input, output) path pairs for every listed file (all of them; the original's PR #12 fix)."""
    return [(str(Path(input_root) / n), str(Path(output_root) / n)) for n in names]


def main(argv=None) -> int:
    """CLI with the original flags (plus ``--trim_seconds``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input_root", type=str, required=True, help="source directory")
    parser.add_argument("--input_file_list_path", type=str, required=True,
                        help="text file, one file name (relative to input_root) per line, e.g. from `ls -U`")
    parser.add_argument("--output_root", type=str, required=True, help="destination (must differ from input_root)")
    parser.add_argument("--size", type=int, default=224, help="target shorter side in pixels (224)")
    parser.add_argument("--num_workers", type=int, default=24, help="worker processes (24)")
    parser.add_argument("--fps", type=int, default=3, help="output fps, videos only (3; the paper data used 2)")
    parser.add_argument("--file_type", type=str, choices=["image", "video"], required=True, help="image or video")
    parser.add_argument("--trim_seconds", type=float, default=None,
                        help="keep only the first N seconds of each video (DiDeMo used 30); default: all")
    add_num_threads_flag(parser)
    args = parser.parse_args(argv)
    apply_num_threads(args.num_threads)
    if Path(args.input_root).resolve() == Path(args.output_root).resolve():
        raise InputError(args.output_root, "output_root must differ from input_root")
    list_path = Path(args.input_file_list_path)
    if not list_path.is_file():
        raise InputError(list_path, "file list not found")
    names = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
    Path(args.output_root).mkdir(parents=True, exist_ok=True)
    pairs = prepare_pairs(args.input_root, args.output_root, names)
    work = partial(_one, file_type=args.file_type, size=args.size, fps=args.fps, trim_seconds=args.trim_seconds)
    if args.num_workers > 1:
        with Pool(args.num_workers) as pool:
            errors = list(tqdm(pool.imap_unordered(work, pairs, chunksize=32), total=len(pairs)))
    else:
        errors = [work(p) for p in tqdm(pairs)]
    for err in filter(None, errors):
        print(f"warning: {err}", file=sys.stderr)
    copied = 0
    for src, dst in pairs:
        if not Path(dst).exists() or Path(dst).stat().st_size < 1:
            shutil.copy(src, dst)
            copied += 1
    print(f"{len(pairs)} files; {copied} copied unchanged after failures")
    return 0


if __name__ == "__main__":
    run_cli(main)
