"""Download the released metadata (sets, embeddings, features, graph, listfiles, checkpoints).

`python scripts/download_data.py --datasets moments --datatypes graph features --splits val`
fetches <root_url>/<file> into --data_dir for each requested file. --root_url may be an http(s) or
file:// URL or a local directory (a mirror). No wget is needed.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from common.distributed import progress
from common.errors import run_cli
from common.threads import add_num_threads_flag, apply_num_threads

ROOT_URL = "http://abstraction.csail.mit.edu/data/metadata"
DATASETS = ("moments", "kinetics")
DATATYPES = ("abstraction_sets", "embeddings", "category_embeddings", "features", "graph", "listfile",
             "pretrained_model")
SPLITS = ("train", "val", "test")
PER_SPLIT = {
    "abstraction_sets": "{ds}_{split}_abstraction_sets.json",
    "embeddings": "{ds}_{split}_embeddings.pth",
    "features": "resnet3d50_{ds}_{split}_features.pth",
    "listfile": "{ds}_{split}_listfile.txt",
}
PER_DATASET = {
    "graph": "{ds}_graph.json",
    "category_embeddings": "{ds}_category_embeddings.pth",
    "pretrained_model": "AbstractionEmbedding_{ds}_SAM_1-2-3-4_best.pth.tar",
}


def file_names(datasets: Sequence[str], datatypes: Sequence[str], splits: Sequence[str]) -> list[str]:
    """The files to fetch, in the original's order (split 'test' of abstraction_sets is 'human')."""
    names = []
    for ds in datasets:
        for dt in datatypes:
            if dt in PER_SPLIT:
                for split in splits:
                    name = "human" if dt == "abstraction_sets" and split == "test" else split
                    names.append(PER_SPLIT[dt].format(ds=ds, split=name))
            else:
                names.append(PER_DATASET[dt].format(ds=ds))
    return names


def _source_url(root_url: str, name: str) -> str:
    if "://" not in root_url:  # a local mirror directory
        return Path(root_url).resolve().joinpath(name).as_uri()
    return root_url.rstrip("/") + "/" + name


def fetch(url: str, dest: Path) -> None:
    """Copy ``url`` to ``dest`` through a temporary ``.part`` file (no partial file under the real name)."""
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
        tmp.replace(dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def build_parser() -> argparse.ArgumentParser:
    """The original flags plus --root_url."""
    p = argparse.ArgumentParser(prog="download_data.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS, help="datasets (default: both)")
    p.add_argument("--datatypes", nargs="+", default=list(DATATYPES), choices=DATATYPES,
                   help="file kinds (default: all)")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS,
                   help="splits of the per-split kinds; 'test' abstraction sets are the human sets (default: all)")
    p.add_argument("--data_dir", default="metadata", help="where to put the files")
    p.add_argument("--overwrite", action="store_true", help="re-download files that already exist")
    p.add_argument("--root_url", default=ROOT_URL, help="server, file:// URL or local mirror directory")
    add_num_threads_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Download every requested file; returns 1 when some could not be fetched."""
    args = build_parser().parse_args(argv)
    apply_num_threads(args.num_threads)
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in progress(file_names(args.datasets, args.datatypes, args.splits), desc="download", unit="file"):
        dest = data_dir / name
        if dest.exists() and not args.overwrite:
            print(f"{dest} exists, skipping (pass --overwrite to download again)")
            continue
        url = _source_url(args.root_url, name)
        try:
            fetch(url, dest)
            print(f"downloaded {url} -> {dest}")
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            print(f"failed {url}: {reason}", file=sys.stderr)
            failed.append(name)
    if failed:
        # Some requested files never existed on the server (e.g. moments_test_embeddings.pth, spec 2.2).
        print(f"{len(failed)} file(s) could not be fetched: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
