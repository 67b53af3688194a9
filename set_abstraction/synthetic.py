"""A small learnable dataset in the released metadata formats (spec 3.8 recipe), for tests and the demo.

``python -m set_abstraction.synthetic --out DIR`` writes, for moments and kinetics:
graph JSON (with ``links``), category embeddings, per-video embeddings, cached features, listfiles,
train/val abstraction sets and human test sets, with the dataset-specific row orders of spec 3.4.
"""
from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import networkx as nx
import torch

from common.errors import InputError, run_cli
from common.threads import add_num_threads_flag, apply_num_threads
from set_abstraction.graph import ROOT, AbstractionGraph, graph_to_node_link
from set_abstraction.model import canonical_subsets, subset_key

DATASETS = ("moments", "kinetics")
SPLITS = ("train", "val", "test")


def build_hierarchy(num_top: int = 2, groups_per_top: int = 3, classes_per_group: int = 3) -> AbstractionGraph:
    """root -> top nodes -> group nodes -> concrete classes; classes get labels 0..C-1, root the last."""
    g = nx.DiGraph()
    num_groups = num_top * groups_per_top
    num_classes = num_groups * classes_per_group
    for c in range(num_classes):
        g.add_node(f"act{c:02d}.v.01", label=c, category=f"action {c:02d}")
    for k in range(num_groups):
        g.add_node(f"group{k}.v.01", label=num_classes + k)
        for j in range(classes_per_group):
            g.add_edge(f"group{k}.v.01", f"act{k * classes_per_group + j:02d}.v.01")
    for t in range(num_top):
        g.add_node(f"top{t}.v.01", label=num_classes + num_groups + t)
        for k in range(groups_per_top):
            g.add_edge(f"top{t}.v.01", f"group{t * groups_per_top + k}.v.01")
    g.add_node(ROOT, label=num_classes + num_groups + num_top)
    for t in range(num_top):
        g.add_edge(ROOT, f"top{t}.v.01")
    g.graph.update(num_class=num_classes, num_nodes=g.number_of_nodes())
    return AbstractionGraph(g, source="<synthetic>")


def category_embeddings(graph: AbstractionGraph, gen: torch.Generator, dim: int = 300) -> dict[str, torch.Tensor]:
    """root ~ N(0, I); child = parent + 0.8 N(0, I), walking down in topological order (graded similarity)."""
    emb: dict[str, torch.Tensor] = {}
    for node in nx.topological_sort(graph):
        parents = list(graph.predecessors(node))
        base = emb[parents[0]] if parents else torch.zeros(dim)
        scale = 0.8 if parents else 1.0
        emb[node] = base + scale * torch.randn(dim, generator=gen)
    return emb


def _video_names(dataset: str, split: str, classes: list[int], graph: AbstractionGraph) -> list[str]:
    """Listfile names (before the kinetics '.mp4' suffix) for the videos of one split."""
    names = []
    for i, c in enumerate(classes):
        category = graph.node_to_category(f"act{c:02d}.v.01").replace(" ", "_")
        if dataset == "kinetics":
            names.append(f"{category}/{split}{i:05d}_{i % 60:06d}_{i % 60 + 10:06d}")
        elif split == "test":
            names.append(f"test_multi/yt-{split}{i:05d}_{i % 90}.mp4")
        else:
            names.append(f"{split}ing/{category}/{split}{i:05d}.mp4")
    return names


class _Labeller:
    """Abstraction labels for sets of class nodes by the LCA rule (spec 4.6), cached per class tuple."""

    def __init__(self, graph: AbstractionGraph, rng: random.Random):
        self.graph = graph
        self.rng = rng
        self._lca = lru_cache(maxsize=None)(lambda nodes: tuple(graph.lowest_common_ancestor(*nodes)))

    def label(self, nodes: Sequence[str]) -> str:
        options = self._lca(tuple(sorted(nodes)))
        # Ties are possible in a DAG; the original online sampler picked one at random.
        return options[0] if len(options) == 1 else self.rng.choice(options)


def sample_sets(graph: AbstractionGraph, video_classes: list[int], names: list[str], num_sets: int,
                rng: random.Random, coherent_fraction: float = 0.7) -> list[dict]:
    """Abstraction-set records: 70% coherent (one group + same-top distractors), 30% uniform.

    Uniform sets alone make almost every label ``root`` (spec 3.8); this mix keeps the size-4 majority
    label near a third, as in the spec's validated recipe."""
    by_class: dict[int, list[int]] = {}
    for i, c in enumerate(video_classes):
        by_class.setdefault(c, []).append(i)
    concrete = sorted(by_class)
    group_of = {c: next(iter(graph.predecessors(f"act{c:02d}.v.01"))) for c in concrete}
    top_of = {c: next(iter(graph.predecessors(group_of[c]))) for c in concrete}
    labeller = _Labeller(graph, rng)
    subsets = canonical_subsets(4)
    records = []
    for _ in range(num_sets):
        if rng.random() < coherent_fraction:
            anchor = rng.choice(concrete)
            same_group = [c for c in concrete if group_of[c] == group_of[anchor]]
            same_top = [c for c in concrete if top_of[c] == top_of[anchor]]
            classes = []
            for _slot in range(4):
                r = rng.random()
                pool = same_group if r < 0.7 else same_top if r < 0.95 else concrete
                classes.append(rng.choice(pool))
        else:
            classes = [rng.choice(concrete) for _ in range(4)]
        members = [rng.choice(by_class[c]) for c in classes]
        nodes = [f"act{c:02d}.v.01" for c in classes]
        labels = {}
        for S in subsets:
            if len(S) == 1:
                labels[subset_key(S)] = [graph.node_to_category(nodes[S[0]])]
            else:
                labels[subset_key(S)] = [labeller.label([nodes[j] for j in S])]
        records.append({"videos": [names[m] for m in members], "labels": labels})
    return records


def sample_human_sets(graph: AbstractionGraph, video_classes: list[int], names: list[str], rng: random.Random,
                      per_key: int = 20, human_names: list[str] | None = None) -> dict[str, list[dict]]:
    """Human-style records: reference from one group, 5 random queries, dist = graph distance + jitter."""
    undirected = graph.to_undirected(as_view=True)
    human_names = human_names or names
    by_group: dict[str, list[int]] = {}
    for i, c in enumerate(video_classes):
        by_group.setdefault(next(iter(graph.predecessors(f"act{c:02d}.v.01"))), []).append(i)
    groups = sorted(by_group)
    out: dict[str, list[dict]] = {}
    for size in (2, 3, 4):
        records = []
        for _ in range(per_key):
            group = rng.choice(groups)
            ref = rng.sample(by_group[group], size)
            queries = rng.sample(range(len(names)), 5)
            query = []
            for q in queries:
                node = f"act{video_classes[q]:02d}.v.01"
                dist = nx.shortest_path_length(undirected, group, node) + 0.01 * rng.random()
                query.append([human_names[q], video_classes[q], round(dist, 6)])
            records.append({
                "common": group,
                "reference": [[human_names[r], video_classes[r], 0.0] for r in ref],
                "query": query,
            })
        out[str(size)] = records
    return out


def generate(out: str | Path, datasets: Sequence[str] = DATASETS, feature_dim: int = 256,
             num_videos: Sequence[int] = (600, 200, 200), num_train_sets: int = 1024, num_val_sets: int = 128,
             human_per_key: int = 20, seed: int = 0, overwrite: bool = False) -> Path:
    """Write the synthetic metadata for ``datasets`` into ``out``; returns ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for dataset in datasets:
        if dataset not in DATASETS:
            raise InputError("--datasets", f"unknown dataset {dataset!r} (choices: {', '.join(DATASETS)})")
        existing = out / f"{dataset}_graph.json"
        if existing.exists() and not overwrite:
            raise InputError(existing, "already exists; pass --overwrite to replace the synthetic data")
    for d_index, dataset in enumerate(datasets):
        gen = torch.Generator().manual_seed(seed * 1000 + d_index)
        rng = random.Random(seed * 1000 + d_index)
        graph = build_hierarchy()
        num_classes = graph.graph["num_class"]
        (out / f"{dataset}_graph.json").write_text(json.dumps(graph_to_node_link(graph)))
        cat_emb = category_embeddings(graph, gen)
        torch.save(cat_emb, out / f"{dataset}_category_embeddings.pth")
        prototypes = torch.randn(num_classes, feature_dim, generator=gen)
        for split, count in zip(SPLITS, num_videos):
            classes = [i % num_classes for i in range(count)]
            names = _video_names(dataset, split, classes, graph)
            keys = [n + ".mp4" for n in names] if dataset == "kinetics" else names
            feats = torch.relu(prototypes[torch.tensor(classes)] + 0.5 * torch.randn(count, feature_dim, generator=gen))
            emb = {k: cat_emb[f"act{c:02d}.v.01"] + 0.05 * torch.randn(300, generator=gen)
                   for k, c in zip(keys, classes)}
            order = list(range(count))
            rng.shuffle(order)
            listfile_order = list(range(count))
            if dataset == "moments" and split != "test":
                # Rows follow the embeddings dict order, which is deliberately not the listfile order.
                emb = {keys[i]: emb[keys[i]] for i in order}
                feature_rows = order
            else:
                emb = {keys[i]: emb[keys[i]] for i in order}  # dict order irrelevant here
                feature_rows = listfile_order
            torch.save(feats[torch.tensor(feature_rows)].clone(), out / f"resnet3d50_{dataset}_{split}_features.pth")
            if not (dataset == "moments" and split == "test"):
                torch.save(emb, out / f"{dataset}_{split}_embeddings.pth")
            lines = [f"{names[i]} {30 + i % 60} {classes[i]}" for i in listfile_order]
            (out / f"{dataset}_{split}_listfile.txt").write_text("\n".join(lines) + "\n")
            if split == "test":
                human_names = [k.replace("test_multi", "multi_test") for k in keys]
                human = sample_human_sets(graph, classes, keys, rng, human_per_key, human_names)
                (out / f"{dataset}_human_abstraction_sets.json").write_text(json.dumps(human))
            else:
                num_sets = num_train_sets if split == "train" else num_val_sets
                sets = sample_sets(graph, classes, keys, num_sets, rng)
                (out / f"{dataset}_{split}_abstraction_sets.json").write_text(json.dumps(sets))
    return out


def build_parser() -> argparse.ArgumentParser:
    """CLI flags of the generator."""
    p = argparse.ArgumentParser(prog="python -m set_abstraction.synthetic", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="directory to write the metadata files into (a --metadata_dir)")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS,
                   help="which file sets to write (default: both)")
    p.add_argument("--feature_dim", type=int, default=256,
                   help="backbone feature size D (256 for fast learning; 2048 is the released size)")
    p.add_argument("--num_videos", type=int, nargs=3, default=[600, 200, 200], metavar=("TRAIN", "VAL", "TEST"),
                   help="videos per split")
    p.add_argument("--num_train_sets", type=int, default=1024, help="training abstraction sets")
    p.add_argument("--num_val_sets", type=int, default=128, help="validation abstraction sets")
    p.add_argument("--human_per_key", type=int, default=20, help="human test records per reference size 2/3/4")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--overwrite", action="store_true", help="replace existing synthetic files in --out")
    add_num_threads_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags and write the dataset."""
    args = build_parser().parse_args(argv)
    apply_num_threads(args.num_threads)
    out = generate(args.out, args.datasets, args.feature_dim, args.num_videos, args.num_train_sets,
                   args.num_val_sets, args.human_per_key, args.seed, args.overwrite)
    print(f"wrote synthetic set-abstraction metadata ({', '.join(args.datasets)}) to {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
