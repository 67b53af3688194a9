"""Speed of common.metrics against pycocoevalcap 1.2 on the abstract-50S leave-one-out workload.

For every image of abstract48S.json (500 images x 48 human captions) the first caption is the prediction
and the other 47 are its references. Each pipeline starts from raw strings, tokenisation included:

  CIDEr:   common.metrics.evaluate(..., metrics=["CIDEr"])   vs  PTBTokenizer (Java) + Cider
  BLEU:    common.metrics.evaluate(..., metrics=["Bleu"])    vs  PTBTokenizer (Java) + Bleu(4)
  ROUGE-L: common.metrics.evaluate(..., metrics=["ROUGE_L"]) vs  PTBTokenizer (Java) + Rouge

Wall-clock seconds, best of --repeat runs each, measured side by side in this one process; the scores are
checked to agree (|diff| <= 1e-9). Without ../shared (or --captions), a synthetic workload of the same size
is used and the script says so. Bars: CIDEr >= 10x, BLEU >= 5x, ROUGE-L >= 5x.

    python benchmarks/metrics.py [--captions PATH] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable as `python benchmarks/metrics.py` from a clone
    sys.path.insert(0, str(REPO))

from common.errors import InputError, run_cli  # noqa: E402
from common.metrics import evaluate  # noqa: E402
from common.metrics.synthetic import caption_sets  # noqa: E402

DEFAULT_CAPTIONS = REPO.parent / "shared" / "data" / "captions" / "abstract48S.json"
BARS = {"CIDEr": 10.0, "Bleu": 5.0, "ROUGE_L": 5.0}
# abstract48S: ~0.2% of captions need the full lexer (digits, quotes, brackets...); this scale gives ~1%
SYNTHETIC_QUIRK_SCALE = 0.05


def load_workload(path: Path | None) -> tuple[dict, dict, str]:
    """(references {id: [47 captions]}, predictions {id: caption}, description)."""
    if path is None:
        if DEFAULT_CAPTIONS.is_file():
            path = DEFAULT_CAPTIONS
        else:
            print(f"note: {DEFAULT_CAPTIONS} not found: using a SYNTHETIC workload of the same size "
                  "(500 images x 48 captions, unusual tokens about as rare as in human captions); "
                  "pass --captions PATH for the real one")
            records, desc = caption_sets(500, 48, seed=0, quirk_scale=SYNTHETIC_QUIRK_SCALE), "synthetic 500 x 48"
            return *_split(records, "synthetic"), desc
    if not path.is_file():
        raise InputError(path, "captions file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON ({err.msg})") from None
    if isinstance(data, dict):
        data = data.get("annotations", [])
    return *_split(data, path), str(path)


def _split(records: list, source) -> tuple[dict, dict]:
    by_image: dict = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "image_id" not in rec or "caption" not in rec:
            raise InputError(source, "expected {image_id, caption}", record=i)
        by_image.setdefault(rec["image_id"], []).append(rec["caption"])
    by_image = {k: v for k, v in by_image.items() if len(v) >= 2}
    if not by_image:
        raise InputError(source, "no image has two or more captions")
    refs = {k: v[1:] for k, v in by_image.items()}
    preds = {k: v[0] for k, v in by_image.items()}
    return refs, preds


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the JVMs of pycocoevalcap)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def best_time(fn: Callable[[], object], repeat: int) -> tuple[float, float, object]:
    """(best wall seconds, CPU seconds of that run, last result) over ``repeat`` runs."""
    best, cpu, result = float("inf"), float("inf"), None
    for _ in range(repeat):
        c0, t0 = _cpu(), time.perf_counter()
        result = fn()
        wall = time.perf_counter() - t0
        if wall < best:
            best, cpu = wall, _cpu() - c0
    return best, cpu, result


def theirs(refs: dict, preds: dict, scorer_name: str) -> float | list:
    """pycocoevalcap: Java PTBTokenizer on refs and predictions, then the scorer."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = {k: [{"caption": c} for c in v] for k, v in refs.items()}
    res = {k: [{"caption": preds[k]}] for k in refs}
    tok = PTBTokenizer()
    gts_t, res_t = tok.tokenize(gts), tok.tokenize(res)
    scorer = {"CIDEr": Cider, "Bleu": lambda: Bleu(4), "ROUGE_L": Rouge}[scorer_name]()
    if scorer_name == "Bleu":
        score, _ = scorer.compute_score(gts_t, res_t, verbose=0)
    else:
        score, _ = scorer.compute_score(gts_t, res_t)
    return score


def main(argv: Sequence[str] | None = None) -> int:
    """Time both implementations side by side and print the ratios."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--captions", type=Path, default=None,
                   help="abstract48S-style list of {image_id, caption} (or a COCO caption file); "
                        f"default {DEFAULT_CAPTIONS}, else a synthetic workload")
    p.add_argument("--repeat", type=int, default=3, help="runs per timing; the best is kept (default 3)")
    a = p.parse_args(argv)
    if a.repeat < 1:
        p.error("--repeat must be >= 1")
    refs, preds, desc = load_workload(a.captions)
    n_refs = sum(len(v) for v in refs.values())
    print(f"workload: {desc}: {len(preds)} predictions, {n_refs} references (leave-one-out)")
    print("wall seconds (best of --repeat); CPU seconds of the same run in brackets (incl. Java children)")
    print(f"{'metric':<8} {'common.metrics':>16} {'pycocoevalcap':>16} {'speed-up':>9} {'(CPU)':>7} {'bar':>4}  ok")
    all_ok = True
    for name, keys in (("CIDEr", ["CIDEr"]), ("Bleu", ["Bleu"]), ("ROUGE_L", ["ROUGE_L"])):
        t_ours, c_ours, ours = best_time(lambda k=keys: evaluate(refs, preds, metrics=k), a.repeat)
        t_theirs, c_theirs, ref = best_time(lambda m=name: theirs(refs, preds, m), a.repeat)
        ref_vals = list(ref) if isinstance(ref, list) else [ref]
        our_vals = [ours[k] for k in ours]
        diff = max(abs(x - float(y)) for x, y in zip(our_vals, ref_vals))
        ratio = t_theirs / t_ours
        ok = ratio >= BARS[name] and diff <= 1e-9
        all_ok &= ok
        print(f"{name:<8} {t_ours:>7.3f} ({c_ours:>6.2f}) {t_theirs:>7.3f} ({c_theirs:>6.2f}) {ratio:>8.1f}x "
              f"({c_theirs / max(c_ours, 1e-9):>4.1f}x) {BARS[name]:>3.0f}x  {'yes' if ok else 'NO'} "
              f"(max |score diff| {diff:.1e})")
    return 0 if all_ok else 1


if __name__ == "__main__":
    run_cli(main)
