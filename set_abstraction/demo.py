"""End-to-end demo on synthetic data: generate, train the tiny SAM, evaluate the three tasks against
their baselines, write metrics.json, report.md and PNGs (``make set_abstraction-demo``)."""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common.checkpoint import atomic_write_text  # noqa: E402
from common.distributed import init_distributed  # noqa: E402
from common.errors import InputError, run_cli  # noqa: E402
from common.plot_metrics import plot_runs  # noqa: E402
from common.safe_pickle import add_trust_flag  # noqa: E402
from common.threads import add_num_threads_flag, apply_num_threads  # noqa: E402
from set_abstraction import cfg, synthetic, tasks  # noqa: E402
from set_abstraction.experiment import AbstractionEmbedding  # noqa: E402
from set_abstraction.model import canonical_subsets  # noqa: E402


def baselines(experiment: AbstractionEmbedding) -> dict:
    """Majority-label abstraction accuracy, feature-mean set completion and odd-one-out."""
    meta = experiment.meta
    train, val = meta.abstraction("train"), meta.abstraction("val")
    return {
        "majority": tasks.majority_baseline(train.labels, val.labels, canonical_subsets(4)),
        "ranking": tasks.evaluate_ranking_baseline(meta.ranking()),
        "outlier": tasks.evaluate_outlier_baseline(meta.outlier()),
    }


def train_and_evaluate(metadata_dir: Path, work: Path, dataset: str = "moments", epochs: int = 8,
                       seed: int = 0, trust: bool = False) -> dict:
    """Train the spec 10 tiny model on ``metadata_dir`` and evaluate it; returns results and history."""
    argv = ["--metadata_dir", str(metadata_dir), "--dataset", dataset, "--model_config", "tiny", "--lr", "3e-3",
            "-b", "64", "--num_epochs", str(epochs), "--num_workers", "0", "--exp_id", "demo", "--seed", str(seed),
            "--log_dir", str(work / "logs"), "--checkpoint_dir", str(work / "checkpoints"),
            "--output_dir", str(work / "outputs")] + (["--trust_checkpoint"] if trust else [])
    info = init_distributed(device="cpu")
    experiment = AbstractionEmbedding(cfg.parse_args(argv), info, mode="train")
    history = experiment.run()
    results = experiment.evaluate(visualize=True)
    return {"history": history, "results": results, "baselines": baselines(experiment), "name": experiment.name,
            "experiment": experiment}


def metrics_rows(run: dict) -> list[dict]:
    """The metrics.json ``results`` rows: each metric with its baseline."""
    res, base = run["results"], run["baselines"]
    rows = [{"name": "abstraction top-1 (all subsets, %)", "value": res["abstraction"]["top1@abstr"],
             "baseline": base["majority"]["top1@abstr"], "baseline_kind": "majority"}]
    for size in (2, 3, 4):
        rows.append({"name": f"abstraction top-1 (subsets of {size}, %)",
                     "value": res["abstraction"][f"top1@abstr_{size}"],
                     "baseline": base["majority"][f"top1@abstr_{size}"], "baseline_kind": "majority"})
    rows.append({"name": "set completion Spearman (overall)", "value": res["set_completion"]["overall"],
                 "baseline": base["ranking"]["overall"], "baseline_kind": "ablation"})
    for n in tasks.OUTLIER_SIZES:
        rows.append({"name": f"odd-one-out top-1 (N={n}, %)", "value": res["odd_one_out"][str(n)]["top1"],
                     "baseline": tasks.chance_outlier(n)["top1"], "baseline_kind": "chance"})
    return rows


def plot_history(history: dict, out_png: Path) -> Path:
    """Training loss and validation top-1 per epoch."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot([h["epoch"] for h in history["train"]], [h["full"] for h in history["train"]], marker="o")
    a.set_xlabel("epoch"), a.set_ylabel("train loss (embed + abstr)")
    b.plot([h["epoch"] for h in history["val"]], [h["top1@abstr"] for h in history["val"]], marker="o", color="C2")
    b.set_xlabel("epoch"), b.set_ylabel("val top-1 abstraction (%)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def write_report(run: dict, rows: list[dict], out: Path, seconds: float, figures: list[Path]) -> Path:
    """report.md: what ran, the table of metrics vs baselines, the figures."""
    lines = ["# Set abstraction demo (synthetic hierarchy)", "",
             "Tiny Set Abstraction Module (spec 10 configuration, 111,756 parameters) trained on the synthetic "
             "27-node hierarchy (`python -m set_abstraction.synthetic`), evaluated like `test.py`.", "",
             f"Run name: `{run['name']}`; {len(run['history']['train'])} epochs; {seconds:.0f} s.", "",
             "| metric | value | baseline | kind |", "|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['value']:.3f} | {r['baseline']:.3f} | {r['baseline_kind']} |" for r in rows]
    lines += ["", "Spec 10 reference (original code on this recipe): top-1 99.7 % vs 8-34 % majority; Spearman 0.74 "
              "vs 0.27 feature mean; odd-one-out 100 % vs 20-33 % chance.", ""]
    lines += [f"![{p.stem}]({p.name})" for p in figures]
    return atomic_write_text(out / "report.md", "\n".join(lines) + "\n")


def build_parser() -> argparse.ArgumentParser:
    """CLI flags."""
    p = argparse.ArgumentParser(prog="python -m set_abstraction.demo", description=__doc__)
    p.add_argument("--out", default="runs/demo/set_abstraction", help="where metrics.json, report.md, PNGs go")
    p.add_argument("--data_dir", default=None, help="metadata dir (default: <out>/data, generated when missing)")
    p.add_argument("--dataset", default="moments", choices=cfg.DATASETS, help="which synthetic file set to use")
    p.add_argument("--epochs", type=int, default=8, help="training epochs (16 steps each)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous demo run in --out")
    add_num_threads_flag(p)
    p.set_defaults(num_threads=1)  # the tiny model gains nothing from threads; 1 also makes the run bit-reproducible
    return add_trust_flag(p)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo."""
    args = build_parser().parse_args(argv)
    apply_num_threads(args.num_threads)
    start = time.time()
    out = Path(args.out)
    work = out / "run"
    if (out / "metrics.json").exists() and not args.overwrite:
        raise InputError(out / "metrics.json", "exists; pass --overwrite (make set_abstraction-demo does)")
    if work.exists():
        import shutil

        shutil.rmtree(work)
    data_dir = Path(args.data_dir) if args.data_dir else out / "data"
    if not (data_dir / f"{args.dataset}_graph.json").exists():
        synthetic.generate(data_dir, datasets=[args.dataset])
    run = train_and_evaluate(data_dir, work, args.dataset, args.epochs, trust=args.trust_checkpoint)
    rows = metrics_rows(run)
    figures = []
    example = Path(run["results"]["figure"])
    figures.append(example.replace(out / "graph_odd_one_out.png"))
    figures.append(plot_history(run["history"], out / "training_curve.png"))
    figures.append(plot_runs([run["experiment"].run_dir], out / "metrics_curves.png"))  # the common metrics.jsonl
    model = run["experiment"].model
    results_file = run["experiment"].output_dir / f"{run['name']}_results.json"
    model.save_pretrained(out / "pretrained", metrics_file=results_file,
                          training_data="synthetic 27-node hierarchy (python -m set_abstraction.synthetic), seed 0")
    seconds = time.time() - start
    atomic_write_text(out / "metrics.json", json.dumps({"results": rows, "seconds": seconds}, indent=2) + "\n")
    write_report(run, rows, out, seconds, figures)
    for r in rows:
        print(f"{r['name']}: {r['value']:.3f} (baseline {r['baseline']:.3f}, {r['baseline_kind']})")
    print(f"wrote {out / 'metrics.json'}, {out / 'report.md'} and {len(figures)} PNGs in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    run_cli(main)
