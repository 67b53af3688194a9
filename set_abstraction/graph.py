"""The semantic hierarchy: a networkx DAG over action classes read from the released node-link JSON."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import networkx as nx
import torch

from common.errors import InputError
from set_abstraction.files import load_json, load_vector_dict

ROOT = "root"


class AbstractionGraph(nx.DiGraph):
    """Hypernym DAG (edges point parent -> child); every node has an int ``label`` (the CE target)."""

    def __init__(self, incoming_graph_data: Any = None, source: str | Path = "<graph>", **attr: Any):
        super().__init__(incoming_graph_data, **attr)
        self.source = str(source)
        self._category_to_node: dict[str, str] = {}
        self._label_to_node: dict[int, str] = {}
        if incoming_graph_data is not None:
            self._index()

    def _index(self) -> None:
        for node, data in self.nodes(data=True):
            if "label" not in data:
                raise InputError(self.source, "every node needs an int 'label'", record=node, field="label")
            label = data["label"]
            if isinstance(label, bool) or not isinstance(label, int) or label < 0:
                raise InputError(self.source, f"label must be a non-negative int, got {label!r}",
                                 record=node, field="label")
            if label in self._label_to_node:
                raise InputError(self.source, f"label {label} also used by node "
                                              f"{self._label_to_node[label]!r}", record=node, field="label")
            self._label_to_node[label] = node
            if "category" in data:
                self._category_to_node[data["category"]] = node
        if not nx.is_directed_acyclic_graph(self):
            raise InputError(self.source, "the hierarchy must be a DAG (a cycle was found)", field="links")

    # -- lookups ---------------------------------------------------------------------------------
    @property
    def num_nodes(self) -> int:
        """Number of graph nodes (= classifier outputs needed)."""
        return self.number_of_nodes()

    def category_to_node(self, category: str) -> str:
        """The node whose ``category`` is ``category``; node ids are valid categories too."""
        return self._category_to_node.get(category, category)

    def node_to_label(self, node: str) -> int:
        """The CE target index of ``node`` (KeyError when absent)."""
        return self.nodes[node]["label"]

    def label_to_node(self, label: int) -> str:
        """The node id carrying ``label``."""
        return self._label_to_node[int(label)]

    def node_to_category(self, node: str) -> str:
        """The dataset class name of a concrete node, else the node id."""
        return self.nodes[node].get("category", node)

    def is_concrete(self, node: str) -> bool:
        """True for a dataset class (a node with a ``category``)."""
        return "category" in self.nodes[node]

    # -- hierarchy -------------------------------------------------------------------------------
    def ancestors_of(self, *nodes: str, common: bool = True, include_src: bool = True) -> set[str]:
        """Intersection (common=True) or union of the nodes' ancestor sets, optionally with themselves."""
        sets = []
        for node in nodes:
            anc = set(nx.ancestors(self, node))
            if include_src:
                anc.add(node)
            sets.append(anc)
        if not sets:
            return set()
        return set.intersection(*sets) if common else set.union(*sets)

    def lowest_common_ancestor(self, *nodes: str) -> list[str]:
        """All common ancestors with the minimum summed directed distance to the nodes (spec 4.6)."""
        candidates = self.ancestors_of(*nodes, common=True, include_src=True)
        if not candidates:
            return [ROOT]
        scores = {}
        for cand in candidates:
            lengths = nx.single_source_shortest_path_length(self, cand)
            scores[cand] = sum(lengths[n] for n in nodes)
        best = min(scores.values())
        return sorted(c for c, s in scores.items() if s == best)

    def hypernym_path(self, node: str, root: str = ROOT) -> list[str]:
        """A shortest path root -> node."""
        return nx.shortest_path(self, root, node)

    def node_distance(self, a: str, b: str) -> int:
        """Undirected shortest-path length between two nodes."""
        return nx.shortest_path_length(self.to_undirected(as_view=True), a, b)

    def depth(self) -> dict[str, int]:
        """Directed distance of every node from the root."""
        return dict(nx.single_source_shortest_path_length(self, ROOT))


def graph_to_node_link(graph: nx.DiGraph) -> dict[str, Any]:
    """Node-link dict with the edge list under ``links`` (the networkx 2.x layout of the release)."""
    return nx.node_link_data(graph, edges="links")


def load_graph(path: str | Path) -> AbstractionGraph:
    """Read a node-link JSON graph whose edge list is under ``links`` (release) or ``edges`` (nx>=3.4)."""
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, Mapping) or "nodes" not in data:
        raise InputError(path, "not a node-link graph (no 'nodes' list)", field="nodes")
    # Spec 9.4 (F): networkx >= 3.4 defaults to 'edges'; the released files use 'links'.
    key = "links" if "links" in data else "edges" if "edges" in data else None
    if key is None:
        raise InputError(path, "no 'links' (or 'edges') list", field="links")
    for i, node in enumerate(data["nodes"]):
        if not isinstance(node, Mapping) or "id" not in node:
            raise InputError(path, "node without an 'id'", record=i, field="id")
    for i, link in enumerate(data[key]):
        if not isinstance(link, Mapping) or "source" not in link or "target" not in link:
            raise InputError(path, "link needs 'source' and 'target'", record=i, field=key)
    data = dict(data, directed=True, multigraph=False)
    raw = nx.node_link_graph(data, directed=True, multigraph=False, edges=key)
    graph = AbstractionGraph(raw, source=path)
    if ROOT not in graph:
        raise InputError(path, f"the hierarchy needs a node with id {ROOT!r}", field="nodes")
    return graph


def load_category_embeddings(path: str | Path, graph: AbstractionGraph | None = None, embedding_dim: int | None = None,
                             trust: bool = False) -> dict[str, torch.Tensor]:
    """Read ``{node_id: FloatTensor[300]}`` (finite, of the model's width); with a graph, check every node has one."""
    emb = load_vector_dict(path, embedding_dim, "node", trust=trust)
    if graph is not None:
        missing = [n for n in graph.nodes if n not in emb]
        if missing:
            raise InputError(path, f"no embedding for {len(missing)} graph node(s), e.g. {missing[:3]}",
                             record=missing[0])
    return emb


def neighbourhood(graph: AbstractionGraph, nodes: Iterable[str]) -> nx.DiGraph:
    """The subgraph of every root -> node path of the given nodes."""
    keep: set[str] = set()
    for node in nodes:
        keep.update(nx.ancestors(graph, node))
        keep.add(node)
    return graph.subgraph(keep)
