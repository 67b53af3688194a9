"""HTML comparison report over `eval.py` report pickles (ORT's `create_report.py`, spec 2.8b).

Input: `eval_results/<id>_<split>_report_data.pkl` files, as written by our `eval.py` (a dict) or by ORT's
(a pickled `misc.report.ReportData` wrapping a coco-caption `COCOEvalCap`; read without ORT's code installed).
Output under `out_dir`: `index.html` (overall scores per run, paired t-tests for each pair of runs),
`<run>/plots/<metric>.jpg` histograms, `<run>/<metric>.html` (images sorted by that metric, worst first),
`image_reports/<image_id>.html` (the image and every run's caption with its scores) and `images/`.
"""
from __future__ import annotations

import html
import shutil
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common.errors import InputError
from common.safe_pickle import load_pickle

METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "CIDEr", "METEOR", "ROUGE_L")
SPICE_CATEGORIES = ("All", "Object", "Relation", "Attribute", "Color", "Cardinality", "Size")


@dataclass
class Run:
    """One evaluated model: overall scores, per-image scores and captions, where its images live."""

    name: str
    overall: dict[str, float]
    per_image: dict[int, dict[str, float]]
    captions: dict[int, str]
    file_paths: dict[int, str] = field(default_factory=dict)
    image_root: str = ""


class _Record:
    """Attribute bag standing in for ORT / coco-caption classes when their code is not importable."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (__dict__, __slots__ state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)


_FOREIGN_MODULES = ("misc.", "pycocoevalcap", "pycocotools")


def _is_foreign(module: str) -> bool:
    return module == "misc" or module.startswith(_FOREIGN_MODULES)


def _report_standins(module: str, name: str) -> type | None:
    """ORT/coco-caption classes (their code is absent) become the inert `_Record`, trusted or not."""
    return _Record if _is_foreign(module) else None


def read_report_pickle(path: Path, trust: bool = False) -> Any:
    """Unpickle a report pickle; anything outside the allow-list is refused unless `trust`."""
    return load_pickle(path, trust=trust, encoding="latin1", standins=_report_standins)


def _flatten_scores(scores: dict) -> dict[str, float]:
    """Per-image score dict -> flat floats; SPICE's nested dict becomes `SPICE.<category>.<f|pr|re>`."""
    flat: dict[str, float] = {}
    for key, value in scores.items():
        if key == "SPICE" and isinstance(value, dict):
            for cat in SPICE_CATEGORIES:
                for sub in ("f", "pr", "re"):
                    v = value.get(cat, {}).get(sub) if isinstance(value.get(cat), dict) else None
                    if v is not None and np.isfinite(float(v)):
                        flat[f"SPICE.{cat}.{sub}"] = float(v)
        elif isinstance(value, (int, float, np.floating)) and key != "image_id":
            flat[key] = float(value)
    return flat


def load_report_pickle(path: str | Path, name: str, trust: bool = False) -> Run:
    """Read one report pickle (our dict or ORT's ReportData) into a `Run`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "report pickle not found (eval.py writes it with --language_eval 1 --image_root R)")
    data = read_report_pickle(path, trust)
    if isinstance(data, dict):
        overall, img_to_eval = data.get("overall"), data.get("imgToEval")
        predictions, image_root = data.get("predictions", []), data.get("image_root", "")
    else:  # ORT: ReportData(coco_eval, predictions, image_root, model_id, split)
        coco_eval = getattr(data, "coco_eval", None)
        overall, img_to_eval = getattr(coco_eval, "eval", None), getattr(coco_eval, "imgToEval", None)
        predictions, image_root = getattr(data, "predictions", []), getattr(data, "image_root", "")
    if not isinstance(overall, dict):
        raise InputError(path, "no overall scores ('overall' / coco_eval.eval)", field="overall")
    if not isinstance(img_to_eval, dict) or not img_to_eval:
        raise InputError(path, "no per-image scores ('imgToEval')", field="imgToEval")
    per_image, captions = {}, {}
    for key, scores in img_to_eval.items():
        if not isinstance(scores, dict):
            raise InputError(path, "per-image scores are not a dict", record=key, field="imgToEval")
        per_image[int(key)] = _flatten_scores(scores)
        if "caption" in scores:
            captions[int(key)] = str(scores["caption"])
    file_paths = {}
    for i, p in enumerate(predictions or []):
        if not isinstance(p, dict) or "image_id" not in p:
            raise InputError(path, "prediction lacks image_id", record=i, field="predictions")
        captions.setdefault(int(p["image_id"]), str(p.get("caption", "")))
        if p.get("file_path"):
            file_paths[int(p["image_id"])] = str(p["file_path"])
    return Run(name, _flatten_scores(overall), per_image, captions, file_paths, str(image_root or ""))


def metric_columns(runs: Sequence[Run]) -> list[str]:
    """The report's columns: coco-caption metrics then SPICE sub-scores, those present in any run."""
    present = set().union(*(r.overall for r in runs), *(s for r in runs for s in r.per_image.values()))
    spice = [f"SPICE.{c}.{s}" for c in SPICE_CATEGORIES for s in ("f", "pr", "re")]
    return [m for m in (*METRICS, *spice) if m in present]


def paired_tests(a: Run, b: Run, metrics: Sequence[str]) -> dict[str, tuple[float, float, int]]:
    """Paired t-test (scipy `ttest_rel`) per metric over the images both runs scored: (t, p, n)."""
    from scipy.stats import ttest_rel

    out = {}
    for m in metrics:
        ids = sorted(i for i in a.per_image if i in b.per_image and m in a.per_image[i] and m in b.per_image[i])
        if len(ids) < 2:
            continue
        x = np.array([a.per_image[i][m] for i in ids])
        y = np.array([b.per_image[i][m] for i in ids])
        if np.allclose(x, y):
            out[m] = (0.0, 1.0, len(ids))
            continue
        res = ttest_rel(x, y)
        out[m] = (float(res.statistic), float(res.pvalue), len(ids))
    return out


def _page(title: str, body: str) -> str:
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td.l,th.l{text-align:left}"
             "img{max-width:480px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")


def _histogram(values: Sequence[float], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(values, bins=20, color="#4477aa")
    ax.set_title(title)
    ax.set_xlabel("per-image score")
    ax.set_ylabel("images")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="jpg")
    plt.close(fig)


def _copy_images(runs: Sequence[Run], out: Path) -> dict[int, str]:
    """Copy each image (first run that can find it) to `images/`; image_id -> relative path."""
    found: dict[int, str] = {}
    for run in runs:
        for image_id, rel in run.file_paths.items():
            src = Path(run.image_root) / rel
            if image_id in found or not run.image_root or not src.is_file():
                continue
            dst = out / "images" / f"{image_id}{src.suffix or '.jpg'}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
            found[image_id] = f"images/{dst.name}"
    return found


def write_report(runs: Sequence[Run], out_dir: str | Path) -> Path:
    """Write the HTML report into a new directory `out_dir` (refused if it exists); returns index.html."""
    out = Path(out_dir)
    if out.exists():
        raise InputError(out, "--out_dir already exists; the report never overwrites an earlier one")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise InputError("--run_names", f"run names must be unique: {names}")
    out.mkdir(parents=True)
    metrics = metric_columns(runs)
    images = _copy_images(runs, out)
    all_ids = sorted(set().union(*(r.per_image for r in runs)))

    for run in runs:
        for m in metrics:
            scored = [(s[m], i) for i, s in run.per_image.items() if m in s]
            if not scored:
                continue
            _histogram([v for v, _ in scored], f"{run.name}: {m}", out / run.name / "plots" / f"{m}.jpg")
            rows = "".join(f"<tr><td>{v:.4f}</td><td class='l'><a href='../image_reports/{i}.html'>{i}</a></td>"
                           f"<td class='l'>{html.escape(run.captions.get(i, ''))}</td></tr>"
                           for v, i in sorted(scored))
            body = (f"<p><img src='plots/{html.escape(m)}.jpg'></p><table><tr><th>{html.escape(m)}</th>"
                    f"<th class='l'>image</th><th class='l'>caption</th></tr>{rows}</table>")
            (out / run.name / f"{m}.html").write_text(_page(f"{run.name}: images by {m} (worst first)", body))

    (out / "image_reports").mkdir()
    for i in all_ids:
        img = f"<p><img src='../{images[i]}'></p>" if i in images else "<p>(image file not found)</p>"
        head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
        rows = "".join(
            f"<tr><td class='l'>{html.escape(r.name)}</td><td class='l'>{html.escape(r.captions.get(i, '-'))}</td>"
            + "".join(f"<td>{r.per_image.get(i, {}).get(m, float('nan')):.4f}</td>" for m in metrics) + "</tr>"
            for r in runs)
        body = f"{img}<table><tr><th class='l'>run</th><th class='l'>caption</th>{head}</tr>{rows}</table>"
        (out / "image_reports" / f"{i}.html").write_text(_page(f"image {i}", body))

    head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    rows = "".join(
        f"<tr><td class='l'>{html.escape(r.name)}</td>"
        + "".join(f"<td><a href='{html.escape(r.name)}/{html.escape(m)}.html'>{r.overall[m]:.4f}</a></td>"
                  if m in r.overall else "<td>-</td>" for m in metrics) + "</tr>" for r in runs)
    body = f"<h2>Overall</h2><table><tr><th class='l'>run</th>{head}</tr>{rows}</table>"
    for a, b in combinations(runs, 2):
        tests = paired_tests(a, b, metrics)
        trs = "".join(f"<tr><td class='l'>{html.escape(m)}</td><td>{t:.3f}</td><td>{p:.4g}</td><td>{n}</td></tr>"
                      for m, (t, p, n) in tests.items())
        body += (f"<h2>{html.escape(a.name)} vs {html.escape(b.name)} (paired t-test)</h2><table><tr>"
                 f"<th class='l'>metric</th><th>t</th><th>p</th><th>images</th></tr>{trs}</table>")
    links = " ".join(f"<a href='image_reports/{i}.html'>{i}</a>" for i in all_ids)
    body += f"<h2>Images</h2><p>{links}</p>"
    index = out / "index.html"
    index.write_text(_page("Captioning report: " + ", ".join(names), body))
    return index
