"""Loaders of the released metadata: features, embeddings, listfiles, abstraction and human sets (spec 3)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from common.errors import InputError
from set_abstraction.files import check_float_tensor, first_non_finite, load_json, load_pth, load_vector_dict
from set_abstraction.graph import AbstractionGraph
from set_abstraction.model import canonical_subsets, subset_key

SET_SIZE = 4  # training / validation sets hold 4 videos


def read_listfile(path: str | Path, suffix: str = "") -> list[str]:
    """Video names in line order: first token of each line + ``suffix``; later tokens must be ints."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "listfile not found")
    names = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        for i, tok in enumerate(tokens[1:], start=1):
            try:
                int(tok)
            except ValueError:
                raise InputError(path, f"token {tok!r} is not an int", record=f"line {lineno}",
                                 field=f"column {i}") from None
        names.append(tokens[0] + suffix)
    return names


class FeatureStore:
    """Video name -> cached backbone feature row (the original ``CachedModel``, spec 3.4).

    ``width`` and ``embedding_dim`` are the model's input and embedding sizes: files that do not fit
    are refused here, naming the file, instead of failing inside a matrix product.
    """

    def __init__(self, features_path: str | Path, dataset: str, embeddings_path: str | Path | None = None,
                 listfile_path: str | Path | None = None, *, width: int | None = None,
                 embedding_dim: int | None = None, trust: bool = False):
        self.features_path = Path(features_path)
        # Spec 9.16 (F): memory-map the feature matrix rather than copying it into every worker.
        features = load_pth(self.features_path, trust=trust, mmap=True)
        if isinstance(features, (list, tuple)):
            if not features:
                raise InputError(self.features_path, "holds no feature rows (an empty list)", field="features")
            for i, row in enumerate(features):
                check_float_tensor(self.features_path, row, dim=1, record=f"row {i}", field="features")
            features = torch.stack(list(features))
        features = check_float_tensor(self.features_path, features, dim=2, width=width, field="features")
        self.features = features.float() if features.dtype != torch.float32 else features
        self.embeddings: dict[str, torch.Tensor] = {}
        if embeddings_path is not None:
            self.embeddings = load_vector_dict(embeddings_path, embedding_dim, "video", trust=trust)
        # Spec 9.3 (K): moments train/val rows follow the embeddings dict order; kinetics (any split)
        # and moments test follow the listfile order, kinetics names getting ".mp4".
        if embeddings_path is not None and dataset != "kinetics":
            names = list(self.embeddings)
            order_source = Path(embeddings_path)
        else:
            if listfile_path is None:
                raise InputError(self.features_path, f"{dataset}: a listfile is needed to index the features")
            names = read_listfile(listfile_path, suffix=".mp4" if dataset == "kinetics" else "")
            order_source = Path(listfile_path)
        if len(names) > len(self.features):
            raise InputError(order_source, f"{len(names)} videos but only {len(self.features)} feature rows "
                                           f"in {self.features_path}")
        self.index = {name: i for i, name in enumerate(names)}
        self.names = names
        self._checked: set[int] = set()

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return int(self.features.shape[1])

    def row(self, name: str) -> int:
        """Feature row of a video (KeyError when unknown)."""
        return self.index[name]

    def check_finite(self, rows: Sequence[int], users: str | Path) -> None:
        """Refuse NaN/inf in the feature rows a dataset (read from ``users``) will use; each row is read once."""
        todo = sorted(set(int(r) for r in rows) - self._checked)
        if not todo:
            return
        bad = first_non_finite(self.features[torch.tensor(todo)])
        if bad is not None:
            row = todo[bad]
            name = self.names[row] if row < len(self.names) else f"row {row}"
            raise InputError(self.features_path, f"row {row} holds NaN or inf values (used by {users})",
                             record=name, field="features")
        self._checked.update(todo)


def load_video_embeddings(path: str | Path, embedding_dim: int | None = None,
                          trust: bool = False) -> dict[str, torch.Tensor]:
    """Read ``{video_name: FloatTensor[300]}`` keeping the stored order (finite, floating, of the model's width)."""
    return load_vector_dict(path, embedding_dim, "video", trust=trust)


@dataclass
class AbstractionRecord:
    """One training/validation set: 4 video names and one abstraction category per subset key."""

    videos: list[str]
    labels: dict[str, str]


def load_abstraction_sets(path: str | Path, set_size: int = SET_SIZE) -> list[AbstractionRecord]:
    """Parse ``{ds}_{split}_abstraction_sets.json`` (a list of {videos, labels}); validates every record."""
    data = load_json(path)
    if not isinstance(data, list):
        raise InputError(path, f"expected a JSON list of records, got {type(data).__name__}")
    if not data:
        raise InputError(path, "holds no abstraction sets (an empty list would train or evaluate nothing)")
    keys = [subset_key(S) for S in canonical_subsets(set_size)]
    records = []
    for i, rec in enumerate(data):
        if not isinstance(rec, Mapping):
            raise InputError(path, "record must be an object", record=i)
        videos = rec.get("videos")
        if not isinstance(videos, list) or len(videos) != set_size or not all(isinstance(v, str) for v in videos):
            raise InputError(path, f"must be a list of {set_size} video names", record=i, field="videos")
        labels = rec.get("labels")
        if not isinstance(labels, Mapping):
            raise InputError(path, "must be an object subset-key -> [category]", record=i, field="labels")
        flat = {}
        for key in keys:
            if key not in labels:
                raise InputError(path, "missing subset key", record=i, field=f"labels.{key}")
            value = labels[key]
            # Spec 9.15 (F): values are one-element lists; anything else broke batching in the original.
            if not (isinstance(value, list) and len(value) == 1 and isinstance(value[0], str)):
                raise InputError(path, f"must be a list holding exactly one category string, got {value!r}",
                                 record=i, field=f"labels.{key}")
            flat[key] = value[0]
        records.append(AbstractionRecord(list(videos), flat))
    return records


class CachedAbstractionDataset(Dataset):
    """Item i -> (features [4, D], (embeddings [15, E], labels [15])) in canonical subset order."""

    def __init__(self, sets_path: str | Path, store: FeatureStore, graph: AbstractionGraph,
                 category_embeddings: Mapping[str, torch.Tensor], set_size: int = SET_SIZE):
        self.sets_path = Path(sets_path)
        self.store = store
        self.records = load_abstraction_sets(sets_path, set_size)
        self.subsets = canonical_subsets(set_size)
        self.keys = [subset_key(S) for S in self.subsets]
        rows, labels, nodes = [], [], []
        # Spec 9.6 (F): a failed lookup is an error naming the record, never a silent random resample.
        for i, rec in enumerate(self.records):
            try:
                rows.append([store.row(v) for v in rec.videos])
            except KeyError as err:
                raise InputError(self.sets_path, f"video {err.args[0]!r} is not in the feature index "
                                                 f"({store.features_path})", record=i, field="videos") from None
            rec_nodes = []
            for key in self.keys:
                node = graph.category_to_node(rec.labels[key])
                if node not in graph:
                    raise InputError(self.sets_path, f"category {rec.labels[key]!r} is not a graph node",
                                     record=i, field=f"labels.{key}")
                rec_nodes.append(node)
            for v in rec.videos:
                if v not in store.embeddings:
                    raise InputError(self.sets_path, f"video {v!r} has no embedding", record=i, field="videos")
            for key, node in zip(self.keys[set_size:], rec_nodes[set_size:]):
                if node not in category_embeddings:
                    raise InputError(self.sets_path, f"node {node!r} has no category embedding",
                                     record=i, field=f"labels.{key}")
            labels.append([graph.node_to_label(n) for n in rec_nodes])
            nodes.append(rec_nodes)
        self.rows = torch.tensor(rows, dtype=torch.long).reshape(-1, set_size)
        store.check_finite(self.rows.flatten().tolist(), self.sets_path)
        self.labels = torch.tensor(labels, dtype=torch.long).reshape(-1, len(self.keys))
        self.nodes = nodes
        self.category_embeddings = category_embeddings
        self.set_size = set_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        rec = self.records[i]
        features = self.store.features[self.rows[i]].float()
        singles = [self.store.embeddings[v] for v in rec.videos]
        abstract = [self.category_embeddings[n] for n in self.nodes[i][self.set_size:]]
        embeddings = torch.stack(singles + abstract).float()
        return features, (embeddings, self.labels[i])


@dataclass
class HumanRecord:
    """One human test record: reference videos and 5 query videos with ground-truth distances."""

    key: str
    reference: list[str]
    query: list[str]
    query_dists: list[float]
    common: Any = None
    reference_labels: list[Any] | None = None
    query_labels: list[Any] | None = None

    @property
    def outlier(self) -> int:
        """Index of the query with the largest distance (the odd one out)."""
        return max(range(len(self.query_dists)), key=lambda j: self.query_dists[j])


def _human_path(path: str) -> str:
    # Spec 9.3 (K): the human-set paths say multi_test where the listfile says test_multi.
    return path.replace("multi_test", "test_multi")


def load_human_sets(path: str | Path, num_queries: int = 5) -> dict[str, list[HumanRecord]]:
    """Parse ``{ds}_human_abstraction_sets.json``: {size key: [{common, reference, query}]}, key order kept."""
    data = load_json(path)
    if not isinstance(data, Mapping):
        raise InputError(path, f"expected a JSON object size-key -> records, got {type(data).__name__}")
    if not data:
        raise InputError(path, "holds no human test sets (an empty object would evaluate nothing)")
    out: dict[str, list[HumanRecord]] = {}
    for key, records in data.items():
        if not isinstance(records, list):
            raise InputError(path, "must be a list of records", record=key)
        if not records:
            raise InputError(path, "an empty list of records (evaluating it would report nothing)", record=key)
        parsed = []
        for i, rec in enumerate(records):
            where = f"{key}[{i}]"
            if not isinstance(rec, Mapping):
                raise InputError(path, "record must be an object", record=where)
            triples = {}
            for field_name in ("reference", "query"):
                items = rec.get(field_name)
                if not isinstance(items, list) or not items:
                    raise InputError(path, "must be a non-empty list of [path, label, dist]",
                                     record=where, field=field_name)
                for j, item in enumerate(items):
                    if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
                            and isinstance(item[2], (int, float)) and not isinstance(item[2], bool)
                            and math.isfinite(item[2])):
                        raise InputError(path, f"entry {j} must be [path, label, finite dist], got {item!r}",
                                         record=where, field=field_name)
                triples[field_name] = items
            # Spec 9.11 (F): exactly 5 queries, checked instead of skipping records later.
            if len(triples["query"]) != num_queries:
                raise InputError(path, f"needs exactly {num_queries} queries, got {len(triples['query'])}",
                                 record=where, field="query")
            parsed.append(HumanRecord(
                key=str(key),
                reference=[_human_path(t[0]) for t in triples["reference"]],
                query=[_human_path(t[0]) for t in triples["query"]],
                query_dists=[float(t[2]) for t in triples["query"]],
                common=rec.get("common"),
                reference_labels=[t[1] for t in triples["reference"]],
                query_labels=[t[1] for t in triples["query"]],
            ))
        out[str(key)] = parsed
    return out


class _HumanDataset(Dataset):
    def __init__(self, human_path: str | Path, store: FeatureStore):
        self.human_path = Path(human_path)
        self.store = store
        self.sets = load_human_sets(human_path)
        self.records = [r for recs in self.sets.values() for r in recs]
        for r in self.records:
            for name in r.reference + r.query:
                if name not in store.index:
                    raise InputError(self.human_path, f"video {name!r} is not in the test feature index "
                                                      f"({store.features_path})", record=r.key, field="path")
        store.check_finite([store.row(n) for r in self.records for n in r.reference + r.query], self.human_path)

    def _features(self, names: Sequence[str]) -> torch.Tensor:
        return self.store.features[[self.store.row(n) for n in names]].float()


class CachedRankingDataset(_HumanDataset):
    """Item i -> (reference features [r, D], query features [5, D]) for set completion."""

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rec = self.records[i]
        return self._features(rec.reference), self._features(rec.query)


class CachedOutlierDataset(_HumanDataset):
    """Item i -> (features [r+1, D] = reference + the max-dist query, target LongTensor([r])).

    Records with a 1-video reference are dropped (total set sizes 3, 4, 5 only, spec 3.7)."""

    def __init__(self, human_path: str | Path, store: FeatureStore):
        super().__init__(human_path, store)
        self.records = [r for r in self.records if len(r.reference) >= 2]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rec = self.records[i]
        names = rec.reference + [rec.query[rec.outlier]]
        return self._features(names), torch.tensor([len(rec.reference)])
