"""Bottom-up region features of your own images without Caffe or detectron2 (issue 13).

    python spatial_captioning/scripts/extract_bu_features.py --image_dir DIR --output_dir data \\
        --weights bua-caffe-frcn-r101_with_attributes.pth

bottom-up-attention's Faster R-CNN R101-C4 (Visual Genome, 1600 classes, 400 attributes; the .pth of
bottom-up-attention.pytorch, read weights-only / restricted) at its test scale (600, max 1000): RPN proposals, RoIPool +
res5 box head, per-class NMS 0.3, confidence 0.2, 10-100 boxes. Writes, as make_bu_data.py does,
``<output_dir>/cocobu_att/<id>.npz`` (feat (K, 2048) float32), ``cocobu_fc/<id>.npy`` (mean), ``cocobu_box/<id>.npy``
((K, 4) float32 pixels), plus ``cocobu_info/<id>.json`` (object/attribute ids for pictures). ``<id>`` is the number the
file name ends with. Images already extracted are skipped; each file is written under a temporary name and renamed.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from common.errors import run_cli
from common.safe_pickle import add_trust_flag
from spatial_captioning.image_folder import extract_folder


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags and extract."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image_dir", required=True, help="folder of images named <id>.jpg (or ..._<id>.jpg)")
    p.add_argument("--output_dir", default="data", help="gets cocobu_att/, cocobu_fc/, cocobu_box/, cocobu_info/")
    p.add_argument("--weights", required=True, help="bua-caffe-frcn-r101_with_attributes.pth")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="compute precision (bf16: CPU autocast)")
    p.add_argument("--no_progress", action="store_true", help="no tqdm progress bar")
    add_trust_flag(p)
    args = p.parse_args(argv)
    written, skipped = extract_folder(args.image_dir, args.output_dir, args.weights, args.trust_checkpoint, args.dtype,
                                      not args.no_progress)
    print(f"wrote {written} images' features under {args.output_dir} ({skipped} already there)")
    return 0


if __name__ == "__main__":
    run_cli(main)
