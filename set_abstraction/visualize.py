"""PNG of a set of videos in the graph: member classes, true vs predicted abstraction, odd-one-out choice."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import torch  # noqa: E402

from set_abstraction.data import CachedOutlierDataset  # noqa: E402
from set_abstraction.graph import ROOT, AbstractionGraph, neighbourhood  # noqa: E402
from set_abstraction.model import AbstractionEmbeddingModule  # noqa: E402


def _class_node(graph: AbstractionGraph, label: Any) -> str | None:
    """The graph node of a human-set label when it is a valid node label (the field is free-form)."""
    if isinstance(label, int) and not isinstance(label, bool):
        try:
            return graph.label_to_node(label)
        except KeyError:
            return None
    if isinstance(label, str):
        node = graph.category_to_node(label)
        return node if node in graph else None
    return None


@torch.no_grad()
def describe_outlier_record(model: AbstractionEmbeddingModule, graph: AbstractionGraph,
                            dataset: CachedOutlierDataset, index: int,
                            device: torch.device | str = "cpu") -> dict[str, Any]:
    """Member class nodes, true/predicted abstraction of the reference, outlier distances and choice."""
    model.eval()
    rec = dataset.records[index]
    x, target = dataset[index]
    x = x.unsqueeze(0).to(device)
    n_ref = len(rec.reference)
    labels = list(rec.reference_labels or [None] * n_ref) + [(rec.query_labels or [None] * 5)[rec.outlier]]
    _, logits = model(x)
    singles = logits[0, :, : x.shape[1]].argmax(dim=0).tolist()
    predicted_classes = [graph.label_to_node(p) for p in singles]
    true_classes = [_class_node(graph, lab) for lab in labels]
    _, ref_logits = model(x[:, :n_ref])
    predicted_abstraction = graph.label_to_node(int(ref_logits[0, :, -1].argmax()))
    if isinstance(rec.common, str) and graph.category_to_node(rec.common) in graph:
        true_abstraction = graph.category_to_node(rec.common)
    elif all(true_classes[:n_ref]):
        true_abstraction = graph.lowest_common_ancestor(*true_classes[:n_ref])[0]
    else:
        true_abstraction = None
    dist, _ = model.find_outlier(x)
    return {
        "members": [*rec.reference, rec.query[rec.outlier]],
        "true_classes": true_classes,
        "predicted_classes": predicted_classes,
        "true_abstraction": true_abstraction,
        "predicted_abstraction": predicted_abstraction,
        "outlier_dist": dist[0].cpu().tolist(),
        "true_outlier": int(target),
        "predicted_outlier": int(dist[0].argmax()),
    }


def hierarchy_layout(sub: nx.DiGraph) -> dict[str, tuple[float, float]]:
    """Root on top, leaves spread in depth-first order, each parent centred over its children."""
    depth = nx.single_source_shortest_path_length(sub, ROOT) if ROOT in sub else {}
    leaves = []
    seen: set[str] = set()
    for node in nx.dfs_preorder_nodes(sub, ROOT, sort_neighbors=sorted) if ROOT in sub else sub.nodes:
        if node not in seen and sub.out_degree(node) == 0:
            leaves.append(node)
        seen.add(node)
    x = {leaf: float(i) for i, leaf in enumerate(leaves)}
    for node in reversed(list(nx.topological_sort(sub))):
        if node not in x:
            children = [x[c] for c in sub.successors(node) if c in x]
            x[node] = sum(children) / len(children) if children else 0.0
    return {n: (x[n], -float(depth.get(n, 0))) for n in sub.nodes}


def plot_outlier_record(model: AbstractionEmbeddingModule, graph: AbstractionGraph, dataset: CachedOutlierDataset,
                        index: int, out_png: str | Path, device: torch.device | str = "cpu") -> Path:
    """Draw the graph neighbourhood of one odd-one-out set and the model's choices; returns the PNG path."""
    info = describe_outlier_record(model, graph, dataset, index, device)
    members = info["true_classes"]
    shown_classes = [c if c is not None else p for c, p in zip(members, info["predicted_classes"])]
    focus = set(shown_classes) | {info["predicted_abstraction"]}
    if info["true_abstraction"]:
        focus.add(info["true_abstraction"])
    sub = nx.DiGraph(neighbourhood(graph, focus))
    pos = hierarchy_layout(sub)

    fig, (ax, bar_ax) = plt.subplots(1, 2, figsize=(13, 6), gridspec_kw={"width_ratios": [3, 1]})
    colours = []
    for node in sub.nodes:
        if node == info["true_abstraction"] and node == info["predicted_abstraction"]:
            colours.append("#f2c744")
        elif node == info["true_abstraction"]:
            colours.append("#5cb85c")
        elif node == info["predicted_abstraction"]:
            colours.append("#d9534f")
        elif node in shown_classes:
            colours.append("#7fb3e6")
        else:
            colours.append("#dddddd")
    nx.draw_networkx_edges(sub, pos, ax=ax, arrows=True, edge_color="#999999")
    nx.draw_networkx_nodes(sub, pos, ax=ax, node_color=colours, node_size=900, edgecolors="#333333")
    labels = {n: graph.node_to_category(n) for n in sub.nodes}
    for i, node in enumerate(shown_classes):
        tag = f"v{i}" + (" (odd)" if i == info["true_outlier"] else "")
        labels[node] = labels[node] + "\n" + tag if "\nv" not in labels[node] else labels[node] + f",{tag}"
    nx.draw_networkx_labels(sub, pos, labels=labels, ax=ax, font_size=7)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, markersize=10, label=t) for c, t in (
        ("#5cb85c", "true abstraction"), ("#d9534f", "predicted abstraction"), ("#f2c744", "true = predicted"),
        ("#7fb3e6", "member class"))]
    ax.legend(handles=handles, loc="upper left", fontsize=8, framealpha=0.9)
    ax.set_title(f"set of {len(members)}: reference v0..v{len(members) - 2} + odd one v{len(members) - 1}")
    ax.axis("off")

    dist = info["outlier_dist"]
    bar_colours = ["#d9534f" if i == info["predicted_outlier"] else "#7fb3e6" for i in range(len(dist))]
    bar_ax.bar([f"v{i}" for i in range(len(dist))], dist, color=bar_colours, edgecolor="#333333")
    bar_ax.set_ylabel("cosine distance to set abstraction")
    verdict = "correct" if info["predicted_outlier"] == info["true_outlier"] else "wrong"
    bar_ax.set_title(f"odd-one-out: predicted v{info['predicted_outlier']}, "
                     f"true v{info['true_outlier']} ({verdict})", fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
