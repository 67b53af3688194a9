"""Build the COCO-format GT files the caption evaluation reads (gt/{datatype}_total_change_captions_reformat.json).

    python preprocess/eval_utils.py --datatype spot --input your_data/spot-the-diff/test.json --output gt/spot_total_change_captions_reformat.json
    python preprocess/eval_utils.py --datatype clevr --input your_data/clevr_change/data --output gt/clevr_total_change_captions_reformat.json
    python preprocess/eval_utils.py --datatype ier --input your_data/ier/test.json --output gt/ier_total_change_captions_reformat.json

Spot: one image entry per record of the RAW test.json (duplicated ids kept, as the released file has).
CLEVR: RCC's merge of change_captions.json and no_change_captions.json (distractor ids get `_n`).
(The original read a hard-coded 'test.json' and wrote ./total_change_captions_reformat.json.)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.errors import InputError, run_cli
from clip4idc.data.clevr import ClevrChange
from clip4idc.data.ier import ier_gt
from clip4idc.data.spot import spot_gt


def main(argv=None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datatype", choices=["spot", "clevr", "ier"], required=True, help="dataset kind")
    p.add_argument("--input", required=True, help="Spot/IER: the raw test.json; CLEVR: the data root")
    p.add_argument("--output", required=True, help="GT file to write (must not exist)")
    a = p.parse_args(argv)
    out = Path(a.output)
    if out.exists():
        raise InputError(out, "exists; refusing to overwrite")
    gt = {"spot": spot_gt, "ier": ier_gt, "clevr": lambda x: ClevrChange(x).gt()}[a.datatype](a.input)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(gt, f)
    print(f"wrote {out}: {len(gt['images'])} images, {len(gt['annotations'])} captions")
    return 0


if __name__ == "__main__":
    run_cli(main)
