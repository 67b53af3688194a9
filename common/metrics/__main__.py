"""CLI: ``python -m common.metrics --references refs.json --predictions preds.json [--metrics CIDEr ...]``.

References: COCO caption format (``{"annotations": [{"image_id", "caption"}, ...], ...}``) or a plain list of
``{"image_id", "caption"}`` records (several per image). Predictions: a list of ``{"image_id", "caption"}``
(one per image; a COCO results file), or the same COCO dict layout. Prints a table of coco-caption scores.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from common.errors import InputError, run_cli
from common.metrics.evaluate import ALL_KEYS, evaluate, resolve_metrics
from common.metrics.meteor import MetricUnavailable


def _records(path: Path) -> list:
    if not path.is_file():
        raise InputError(path, "file not found")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise InputError(path, "file is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})") from None
    if isinstance(data, dict):
        if "annotations" not in data:
            raise InputError(path, "a COCO caption file needs an 'annotations' list", field="annotations")
        data = data["annotations"]
    if not isinstance(data, list):
        raise InputError(path, "expected a list of {image_id, caption} records or a COCO dict")
    if not data:
        raise InputError(path, "no caption records in file")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise InputError(path, "expected an object with image_id and caption", record=i)
        for field in ("image_id", "caption"):
            if field not in rec:
                raise InputError(path, "missing field", record=i, field=field)
        if not isinstance(rec["caption"], str):
            raise InputError(path, "caption must be a string", record=i, field="caption")
        if not isinstance(rec["image_id"], (str, int)):
            raise InputError(path, "image_id must be a string or an integer", record=i, field="image_id")
    return data


def load_references(path: str | Path) -> dict:
    """{image_id: [captions]} from a COCO caption file or a list of {image_id, caption}."""
    refs: dict = {}
    for rec in _records(Path(path)):
        refs.setdefault(rec["image_id"], []).append(rec["caption"])
    return refs


def load_predictions(path: str | Path) -> dict:
    """{image_id: caption} from a COCO results list; a repeated image_id is an error."""
    path = Path(path)
    preds: dict = {}
    for i, rec in enumerate(_records(path)):
        if rec["image_id"] in preds:
            raise InputError(path, f"image_id {rec['image_id']!r} has more than one prediction", record=i,
                             field="image_id")
        preds[rec["image_id"]] = rec["caption"]
    return preds


def format_table(scores: dict[str, float]) -> str:
    """Two-column text table, one metric per line."""
    width = max(len("metric"), *(len(k) for k in scores))
    lines = [f"{'metric':<{width}}  score", f"{'-' * width}  --------"]
    lines += [f"{k:<{width}}  {v:.6f}" for k, v in scores.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, score, print the table (and write --output)."""
    parser = argparse.ArgumentParser(prog="python -m common.metrics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--references", required=True, help="reference captions (COCO format or list)")
    parser.add_argument("--predictions", required=True, help="predicted captions: list of {image_id, caption}")
    parser.add_argument("--metrics", nargs="+", default=None, metavar="NAME",
                        help=f"subset to compute: Bleu (=Bleu_1..4) or any of {', '.join(ALL_KEYS)}; "
                             "default: all but SPICE")
    parser.add_argument("--subset", action="store_true",
                        help="score only the predicted images (CLIP4IDC-style); by default every reference image "
                             "needs a prediction, as in COCOEvalCap")
    parser.add_argument("--output", default=None,
                        help="also write the scores as JSON here (refuses to overwrite an existing file)")
    args = parser.parse_args(argv)
    try:
        keys = resolve_metrics(args.metrics)
    except ValueError as err:
        parser.error(str(err))
    if args.output and Path(args.output).exists():
        raise InputError(args.output, "output file exists; remove it or choose another path")
    refs = load_references(args.references)
    preds = load_predictions(args.predictions)
    for i in preds:
        if i not in refs:
            raise InputError(args.predictions, f"predicts an image that {args.references} has no reference "
                             "captions for (no reference captions)", record=i, field="image_id")
    if not args.subset:
        missing = [i for i in refs if i not in preds]
        if missing:
            raise InputError(args.predictions, f"no prediction for {len(missing)} reference image(s), e.g. "
                             f"{missing[0]!r} (use --subset to score only the predicted images)",
                             field="image_id")
    try:
        scores = evaluate(refs, preds, keys)
    except MetricUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(preds)} predictions scored against {sum(len(refs[i]) for i in preds)} references")
    print(format_table(scores))
    if args.output:
        Path(args.output).write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    run_cli(main)
