"""Cache backbone features for a directory of videos, in the released format (spec 3.4, 3.5).

Writes <out_dir>/<basemodel_name>_<dataset>_<split>_features.pth (FloatTensor[N, D], one row per video
in listfile order) and <out_dir>/<dataset>_<split>_listfile.txt (`<name> <num_frames> <label>`; kinetics
names drop the extension, which the loader adds back as '.mp4'). Videos are decoded with OpenCV, N
frames sampled uniformly, resized, normalised and passed through a 3D ResNet (random weights unless
--weights gives a state dict).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from common.checkpoint import (atomic_torch_save, atomic_write_text, extract_state_dict, load_checkpoint_file,
                               load_state_dict_strict, remap_keys)
from common.distributed import progress
from common.errors import InputError, run_cli
from common.safe_pickle import add_trust_flag
from set_abstraction.backbone import ARCHS, TORCHVISION_ARCHS, build_backbone

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v")


def list_videos(video_dir: Path) -> list[Path]:
    """Video files under ``video_dir`` (recursive, sorted)."""
    return sorted(p for p in video_dir.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


def read_clip(path: Path, num_frames: int, size: int) -> tuple[np.ndarray, int]:
    """``num_frames`` RGB frames sampled uniformly, resized to size x size: ([T, H, W, 3] uint8, total frames)."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        capture.release()
    if not frames:
        raise InputError(path, "no frame could be decoded")
    index = np.linspace(0, len(frames) - 1, num_frames).round().astype(int)
    clip = [cv2.resize(cv2.cvtColor(frames[i], cv2.COLOR_BGR2RGB), (size, size), interpolation=cv2.INTER_AREA)
            for i in index]
    return np.stack(clip), len(frames)


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
    return p


@torch.no_grad()
def main(argv: Sequence[str] | None = None) -> int:
    """Decode, embed and write the features file and listfile."""
    args = build_parser().parse_args(argv)
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
        state = extract_state_dict(load_checkpoint_file(args.weights, trust=args.trust_checkpoint))
        load_state_dict_strict(model, remap_keys(state, strip_prefix="module."), source=args.weights)
    model.eval().to(args.device)
    classes = sorted({v.relative_to(video_dir).parts[0] for v in videos if len(v.relative_to(video_dir).parts) > 1})
    rows, lines = [], []
    batch: list[torch.Tensor] = []

    def flush() -> None:
        if batch:
            rows.append(model(torch.stack(batch).to(args.device)).cpu())
            batch.clear()

    for video in progress(videos, desc="extract", unit="video"):
        rel = video.relative_to(video_dir)
        clip, total = read_clip(video, args.num_frames, args.frame_size)
        batch.append(to_tensor(clip, model.config.mean, model.config.std))
        name = rel.with_suffix("").as_posix() if args.dataset == "kinetics" else rel.as_posix()
        label = classes.index(rel.parts[0]) if len(rel.parts) > 1 else 0
        lines.append(f"{name} {total} {label}")
        if len(batch) == args.batch_size:
            flush()
    flush()
    features = torch.cat(rows).float()
    atomic_torch_save(features, features_path)  # creates out_dir; a crash never leaves a half-written file
    atomic_write_text(listfile_path, "\n".join(lines) + "\n")
    print(f"wrote {features_path} {list(features.shape)} and {listfile_path} ({len(lines)} videos)")
    return 0


if __name__ == "__main__":
    run_cli(main)
