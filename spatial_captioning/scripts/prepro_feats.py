"""ResNet grid features of raw images: <output_dir>_fc/<id>.npy and <output_dir>_att/<id>.npz (spec 2.3)."""
from __future__ import annotations

import argparse
from typing import Sequence

from common.errors import run_cli
from common.threads import add_num_threads_flag, apply_num_threads
from common.safe_pickle import add_trust_flag
from spatial_captioning.features import prepro_feats


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags of prepro_feats.py and run it."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--input_json", required=True, help="Karpathy json (filepath, filename, cocoid)")
    p.add_argument("--output_dir", default="data", help="output prefix of the _fc/_att directories")
    p.add_argument("--images_root", default="", help="root containing train2014/ and val2014/")
    p.add_argument("--att_size", default=14, type=int, help="14x14 or 7x7 pooled conv map")
    p.add_argument("--model", default="resnet101", type=str, help="resnet101 or resnet152")
    p.add_argument("--model_root", default="./data/imagenet_weights", type=str,
                   help="holds <model>/ (transformers ResNetModel: config.json + weights) or <model>.pth (torchvision)")
    add_trust_flag(p)
    add_num_threads_flag(p)
    args = p.parse_args(argv)
    apply_num_threads(args.num_threads)
    prepro_feats(args.input_json, args.output_dir, args.images_root, args.att_size, args.model, args.model_root,
                 args.trust_checkpoint)
    return 0


if __name__ == "__main__":
    run_cli(main)
