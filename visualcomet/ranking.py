"""Retrieval evaluation (spec 4.6, 5.4): rank ground-truth inferences among candidates by the model's loss.

Fixes: labels are computed like training (pitfall 9), candidates come from a seeded ``random.Random`` or a
candidate file such as the released ``val_rank_random_50.json`` (pitfall 10), ``movie_N`` draws from the records
of the same movie instead of using the movie name's string length (pitfall 12). Kept: the score divides by
#labelled + 1 (pitfall 11; ``exact_denominator`` offers the plain mean).
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import torch

from common.distributed import progress
from common.errors import InputError
from visualcomet import data as vdata
from visualcomet.model import VisualCometLMHead, sequence_scores
from visualcomet.tokenization import VisualCometTokenizer


def query_key(record: dict[str, Any]) -> str:
    """Queries are unique (image, event, relation) triples."""
    return record["img_fn"] + record["event"] + record["inference_relation"]


def parse_rank_mode(rank_mode: str) -> tuple[str, int]:
    """'random_50' -> ('random', 50)."""
    m = re.fullmatch(r"(random|movie|inference)_(\d+)", rank_mode)
    if m is None:
        raise InputError("--rank_mode", f"expected random_N, movie_N or inference_N, got {rank_mode!r}")
    return m.group(1), int(m.group(2))


def build_candidates(records: list[dict[str, Any]], rank_mode: str, seed: int = 42) -> list[dict[str, Any]]:
    """One query per (image, event, relation): GT indices first, then negatives drawn as ``rank_mode`` says."""
    kind, n = parse_rank_mode(rank_mode)
    rng = random.Random(seed)
    by_key: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_key.setdefault(query_key(r), []).append(i)
    queries, seen = [], set()
    for i, r in enumerate(records):
        key = query_key(r)
        if key in seen:
            continue
        seen.add(key)
        gt = by_key[key]
        gt_set = set(gt)
        if kind == "inference":
            negs = [j for j, o in enumerate(records) if o["img_fn"] == r["img_fn"] and o["event"] == r["event"]
                    and j not in gt_set]
        else:
            need = n - len(gt)
            others = [j for j in range(len(records)) if j not in gt_set]
            if need > len(others):
                raise InputError("--rank_mode", f"{rank_mode} needs {need} negatives but only {len(others)} other "
                                                f"records exist", record=i)
            negs = []
            if kind == "movie" and need > 0:
                same = [j for j in others if records[j].get("movie") == r.get("movie")]
                negs = rng.sample(same, min(len(same), need))
            rest = [j for j in others if j not in set(negs)]
            negs += rng.sample(rest, need - len(negs)) if need - len(negs) > 0 else []
        queries.append({"query_index": i, "inference_candidate_indices": gt + negs, "num_gt": len(gt)})
    return queries


def load_candidates(path: str | Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Queries from a released ``val_rank_random_50.json``-style file (its ``results[*].inference_candidate_indices``)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(path, f"cannot read candidate file: {err}") from None
    results = obj.get("results") if isinstance(obj, dict) else obj
    if not isinstance(results, list):
        raise InputError(path, "expected {'results': [...]} or a list", field="results")
    queries = []
    for k, res in enumerate(results):
        cands = res.get("inference_candidate_indices") if isinstance(res, dict) else None
        if not isinstance(cands, list) or not cands or not all(isinstance(c, int) and 0 <= c < len(records)
                                                               for c in cands):
            raise InputError(path, "missing or out-of-range indices", record=k, field="inference_candidate_indices")
        q = cands[0]
        num_gt = int(res.get("num_gt", sum(query_key(records[c]) == query_key(records[q]) for c in cands)))
        queries.append({"query_index": q, "inference_candidate_indices": cands, "num_gt": num_gt})
    return queries


def candidate_batch(query: dict[str, Any], examples: list[list[int]], labels: list[list[int]],
                    layout: vdata.Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate sequences with positions [17, 17+E+P) (event + place) replaced by the query's."""
    q = query["query_index"]
    a, b = vdata.MAX_IMAGE, layout.inference_start
    ids, labs = [], []
    for c in query["inference_candidate_indices"]:
        ids.append(examples[c][:a] + examples[q][a:b] + examples[c][b:])
        labs.append(labels[c][:a] + labels[q][a:b] + labels[c][b:])
    return torch.tensor(ids), torch.tensor(labs)


@torch.no_grad()
def score_candidates(model: VisualCometLMHead, ids: torch.Tensor, labels: torch.Tensor,
                     visual: dict[str, torch.Tensor] | None, exact_denominator: bool = False,
                     chunk: int = 64) -> torch.Tensor:
    """Rank scores (lower = better) of candidate sequences sharing one visual input."""
    scores = []
    for s in range(0, ids.shape[0], chunk):
        part = ids[s:s + chunk]
        vis = {k: v.expand(part.shape[0], *v.shape[1:]) for k, v in visual.items()} if visual else {}
        logits = model(part, **vis)["logits"]
        scores.append(sequence_scores(logits, labels[s:s + chunk], original_denominator=not exact_denominator))
    return torch.cat(scores)


def rank(model: VisualCometLMHead, dataset: vdata.VCGDataset, layout: vdata.Layout, queries: list[dict[str, Any]],
         device: torch.device, seed: int = 42, exact_denominator: bool = False) -> dict[str, Any]:
    """Score every query's candidates; returns {'mean_recall', 'results'} (spec 2.5 schema)."""
    model.eval()
    results, total = [], 0.0
    for query in progress(queries, desc="rank"):
        torch.manual_seed(seed)  # the original re-seeded per query (no effect in eval mode)
        ids, labs = candidate_batch(query, dataset.examples, dataset.labels, layout)
        item = dataset[query["query_index"]]
        visual = {k: v[None].to(device) for k, v in item.items() if k not in ("input_ids", "labels", "index")}
        scores = score_candidates(model, ids.to(device), labs.to(device), visual or None, exact_denominator)
        order = torch.argsort(scores).tolist()
        num_gt = query["num_gt"]
        recall = sum(1 for p in order[:num_gt] if p < num_gt) / num_gt
        total += recall
        rec = {k: v for k, v in dataset.records[query["query_index"]].items()}
        rec.update({"inference_candidate_indices": query["inference_candidate_indices"], "rank": order,
                    "num_gt": num_gt, "recall": recall})
        results.append(rec)
    return {"mean_recall": total / max(1, len(results)), "results": results}


@torch.no_grad()
def curated_accuracy(model: VisualCometLMHead, dataset: vdata.VCGDataset, tokenizer: VisualCometTokenizer,
                     layout: vdata.Layout, device: torch.device, mode: str = "inference") -> float:
    """Spec 10 learning metric: for each record, is the best-scored of its relation's distinct sentences a GT one?"""
    model.eval()
    by_rel: dict[str, list[str]] = {}
    gt: dict[tuple[int, str], set[str]] = {}
    for r in dataset.records:
        names = by_rel.setdefault(r["inference_relation"], [])
        if r["inference_text_name"] not in names:
            names.append(r["inference_text_name"])
        gt.setdefault((r["event_idx"], r["inference_relation"]), set()).add(r["inference_text_name"])
    hits = 0
    for i, r in enumerate(dataset.records):
        cands = by_rel[r["inference_relation"]]
        enc = [vdata.encode_record(dict(r, inference_text_name=c), tokenizer, layout, mode="inference",
                                   include_text=dataset.examples[i][vdata.MAX_IMAGE] != tokenizer.eot_id)
               for c in cands]
        ids = torch.tensor([e for e, _ in enc], device=device)
        labs = torch.tensor([lab for _, lab in enc], device=device)
        item = dataset[i]
        visual = {k: v[None].to(device) for k, v in item.items() if k not in ("input_ids", "labels", "index")}
        scores = score_candidates(model, ids, labs, visual or None)
        hits += cands[int(torch.argmin(scores))] in gt[(r["event_idx"], r["inference_relation"])]
    return hits / max(1, len(dataset.records))
