"""Cache backbone features for a directory of videos, in the released format (spec 3.4, 3.5).

Writes <out_dir>/<basemodel_name>_<dataset>_<split>_features.pth (FloatTensor[N, D], one row per video
in listfile order) and <out_dir>/<dataset>_<split>_listfile.txt (`<name> <num_frames> <label>`; kinetics
names drop the extension, which the loader adds back as '.mp4'). N frames are sampled uniformly and only
those are decoded (decord, else PyAV seeking to keyframes, else OpenCV), resized, normalised and passed
through a 3D ResNet (random weights unless --weights gives the published Moments/Kinetics 3D ResNet-50 or
a state dict of this backbone). A video that does not decode is reported and skipped (--strict: stop).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import sys

import numpy as np
import torch

from common.checkpoint import atomic_torch_save, atomic_write_text
from common.distributed import progress
from common.errors import InputError, run_cli
from common.safe_pickle import add_trust_flag
from common.threads import add_num_threads_flag, apply_num_threads
from set_abstraction.backbone import ARCHS, TORCHVISION_ARCHS, build_backbone, load_backbone_weights
from set_abstraction.video import READERS, VIDEO_EXTENSIONS, read_frames, resize_frames


def list_videos(video_dir: Path) -> list[Path]:
    """Video files under ``video_dir`` (recursive, sorted)."""
    return sorted(p for p in video_dir.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


def read_clip(path: Path, num_frames: int, size: int, reader: str = "auto",
              allow_short: bool = False) -> tuple[np.ndarray, int]:
    """``num_frames`` RGB frames sampled uniformly, resized to size x size: ([T, H, W, 3] uint8, total frames).

    Only the sampled frames are decoded (``set_abstraction.video``); the indices are the ones this script
    always used, ``linspace(0, total - 1, num_frames).round()``.
    """
    clip = read_frames(path, num_frames, reader=reader, allow_short=allow_short)
    return resize_frames(clip.frames, size), clip.total


def to_tensor(clip: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """[T, H, W, 3] uint8 -> normalised [3, T, H, W] float."""
    x = torch.from_numpy(clip).float().div_(255.0)
    x = (x - torch.tensor(mean)) / torch.tensor(std)
    return x.permute(3, 0, 1, 2).contiguous()


def build_parser() -> argparse.ArgumentParser:
    """CLI flags."""
    p = argparse.ArgumentParser(prog="extract_features.py", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--video_dir", required=True, help="directory of videos (class sub-directories give labels)")
    p.add_argument("--dataset", default="moments", choices=("moments", "kinetics"), help="naming of the outputs")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split named in the outputs")
    p.add_argument("--out_dir", default="metadata", help="metadata directory to write into")
    p.add_argument("--basemodel_name", default="resnet3d50", help="prefix of the features file")
    p.add_argument("--arch", default="resnet3d50", choices=[*ARCHS, *TORCHVISION_ARCHS],
                   help="3D ResNet depth (resnet3d*), or a torchvision video model (tv_*, needs torchvision)")
    p.add_argument("--width", type=int, default=64, help="base width of resnet3d* (64 -> 2048-d features)")
    p.add_argument("--weights", default=None, help="pretrained backbone state dict (.pth/.pth.tar/.safetensors)")
    add_trust_flag(p)
    p.add_argument("--num_frames", type=int, default=16, help="frames sampled per video")
    p.add_argument("--frame_size", type=int, default=224, help="frames are resized to this square size")
    p.add_argument("--batch_size", type=int, default=8, help="videos per forward pass")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the backbone runs")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights when --weights is not given")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--reader", default="auto", choices=READERS,
                   help="video decoder: auto picks decord when installed, else pyav, else opencv")
    p.add_argument("--repeat_short_clips", action="store_true",
                   help="sample a video with fewer frames than --num_frames by repeating frames (earlier "
                        "behaviour) instead of skipping it as unreadable")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first video that cannot be read instead of reporting and skipping it")
    add_num_threads_flag(p)
    return p


@torch.no_grad()
def main(argv: Sequence[str] | None = None) -> int:
    """Decode, embed and write the features file and listfile."""
    args = build_parser().parse_args(argv)
    apply_num_threads(args.num_threads)
    video_dir, out_dir = Path(args.video_dir), Path(args.out_dir)
    features_path = out_dir / f"{args.basemodel_name}_{args.dataset}_{args.split}_features.pth"
    listfile_path = out_dir / f"{args.dataset}_{args.split}_listfile.txt"
    for path in (features_path, listfile_path):
        if path.exists() and not args.overwrite:
            raise InputError(path, "already exists; pass --overwrite to replace it")
    if not video_dir.is_dir():
        raise InputError(video_dir, "video directory not found")
    videos = list_videos(video_dir)
    if not videos:
        raise InputError(video_dir, f"no video files ({', '.join(VIDEO_EXTENSIONS)})")
    torch.manual_seed(args.seed)
    try:
        model = build_backbone(args.arch, args.width)
    except ImportError as err:
        raise InputError("--arch", str(err)) from None
    if args.weights:
        load_backbone_weights(model, args.weights, trust=args.trust_checkpoint)
    model.eval().to(args.device)
    classes = sorted({v.relative_to(video_dir).parts[0] for v in videos if len(v.relative_to(video_dir).parts) > 1})
    rows, lines = [], []
    batch: list[torch.Tensor] = []

    def flush() -> None:
        if batch:
            rows.append(model(torch.stack(batch).to(args.device)).cpu())
            batch.clear()

    skipped = []
    for video in progress(videos, desc="extract", unit="video"):
        rel = video.relative_to(video_dir)
        try:
            clip, total = read_clip(video, args.num_frames, args.frame_size, args.reader, args.repeat_short_clips)
        except InputError as err:
            if args.strict:
                raise
            print(f"skipped: {err}", file=sys.stderr)  # one line naming the file; the others go on
            skipped.append(str(rel))
            continue
        batch.append(to_tensor(clip, model.config.mean, model.config.std))
        name = rel.with_suffix("").as_posix() if args.dataset == "kinetics" else rel.as_posix()
        label = classes.index(rel.parts[0]) if len(rel.parts) > 1 else 0
        lines.append(f"{name} {total} {label}")
        if len(batch) == args.batch_size:
            flush()
    flush()
    if not rows:
        raise InputError(video_dir, f"none of the {len(videos)} videos could be read (see the lines above)")
    features = torch.cat(rows).float()
    atomic_torch_save(features, features_path)  # creates out_dir; a crash never leaves a half-written file
    atomic_write_text(listfile_path, "\n".join(lines) + "\n")
    print(f"wrote {features_path} {list(features.shape)} and {listfile_path} ({len(lines)} videos"
          + (f", {len(skipped)} skipped: {', '.join(skipped)})" if skipped else ")"))
    return 0


if __name__ == "__main__":
    run_cli(main)
