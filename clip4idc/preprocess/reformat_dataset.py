"""Spot-the-Diff: merge entries with the same img_id of train/val/test.json into reformat_{split}.json.

    python preprocess/reformat_dataset.py --data_path your_data/spot-the-diff
(the original edited a hard-coded `data_path` string, spec 9.20)
"""
from __future__ import annotations

import argparse

from common.errors import run_cli
from clip4idc.data.spot import reformat_dataset


def main(argv=None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_path", required=True, help="directory holding the raw train.json, val.json, test.json")
    p.add_argument("--overwrite", action="store_true", help="replace existing reformat_*.json files")
    a = p.parse_args(argv)
    for path in reformat_dataset(a.data_path, overwrite=a.overwrite):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
