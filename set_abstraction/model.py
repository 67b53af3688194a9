"""Set Abstraction Module (SAM): one relation MLP per subset size, hierarchical subset sums, two heads.

Parameter names and layouts follow the released checkpoints (spec 4 and 6) so that
``AbstractionEmbedding_{moments,kinetics}_SAM_1-2-3-4_best.pth.tar`` loads strictly after the
``module.`` prefix is stripped (see ``convert.py``).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import InputError

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
PAPER = "set_abstraction"


@dataclass
class SAMConfig:
    """Sizes of an AbstractionEmbeddingModule (the released ones are model_configs/{moments,kinetics}.json)."""

    in_features: int = 2048
    out_features: int = 2048
    num_nodes: int = 391
    embedding_dim: int = 300
    bottleneck_dim: int = 512
    scales: list[int] = field(default_factory=lambda: [1, 2, 3, 4])

    @classmethod
    def from_json(cls, name_or_path: str | Path) -> "SAMConfig":
        """Read a config by name (model_configs/<name>.json) or path; unknown keys and bad values are refused."""
        path = Path(name_or_path)
        if not path.suffix:
            path = CONFIG_DIR / f"{name_or_path}.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            known = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
            raise InputError(path, f"model config not found (names: {', '.join(known)}, or a JSON path)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(path, f"invalid JSON ({err})") from None
        if not isinstance(data, dict):
            raise InputError(path, f"expected a JSON object of sizes, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        for key, value in data.items():
            if key not in fields:
                raise InputError(path, f"unknown key (known: {', '.join(sorted(fields))})", field=key)
            if key == "scales":
                ok = isinstance(value, list) and value and all(type(v) is int and v >= 1 for v in value)
            else:
                ok = type(value) is int and value >= 1
            if not ok:
                raise InputError(path, f"must be a positive int{' list' if key == 'scales' else ''}, got {value!r}",
                                 field=key)
        return cls(**data)

    def to_dict(self) -> dict:
        """Plain-dict form (for JSON and checkpoint metadata)."""
        return asdict(self)


@lru_cache(maxsize=None)
def relation_sets(n: int, s: int) -> tuple[tuple[int, ...], ...]:
    """All size-``s`` subsets of ``range(n)`` in lexicographic order."""
    return tuple(itertools.combinations(range(n), s))


def canonical_subsets(n: int, min_size: int = 1) -> list[tuple[int, ...]]:
    """Subsets of ``range(n)`` by size then lexicographically: the model's output order (spec 4.3)."""
    return [S for s in range(min_size, n + 1) for S in relation_sets(n, s)]


def subset_key(subset: tuple[int, ...]) -> str:
    """The abstraction-set JSON key of a subset, e.g. (0, 2) -> "0,2"."""
    return ",".join(str(i) for i in subset)


class Relation(nn.Module):
    """MLP over the concatenation (in set order) of ``num_inputs`` features -> one relation feature."""

    def __init__(self, num_inputs: int, in_features: int, out_features: int, bottleneck_dim: int = 512):
        super().__init__()
        self.num_inputs = num_inputs
        self.relate = nn.Sequential(
            nn.ReLU(),
            nn.Linear(num_inputs * in_features, bottleneck_dim),
            nn.ReLU(),
            nn.Linear(bottleneck_dim, out_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., s, D] -> [..., O]."""
        return self.relate(x.flatten(-2))


class AbstractionRelationModule(nn.Module):
    """Multi-scale relation module; ``base_forward`` gives one feature per subset of the input set."""

    def __init__(self, in_features: int, out_features: int, bottleneck_dim: int = 512,
                 scales: int | list[int] = 4):
        super().__init__()
        scale_list = list(range(1, scales + 1)) if isinstance(scales, int) else [int(s) for s in scales]
        if not scale_list or sorted(set(scale_list)) != scale_list or scale_list[0] < 1:
            raise ValueError(f"scales must be distinct increasing positive ints, got {scales}")
        self.scales = scale_list  # a plain attribute, not a buffer: the checkpoints hold none
        self.in_features = in_features
        self.out_features = out_features
        self.relations = nn.ModuleList(
            [Relation(s, in_features, out_features, bottleneck_dim) for s in scale_list])
        # Spec 9.17 (K): unused by AbstractionEmbeddingModule.forward, kept so the released
        # state dicts load strictly. Only the TRN-style ``pooled_forward`` below reads it.
        self.linear = nn.Linear(max(scale_list), 1)
        nn.init.constant_(self.linear.weight, 1.0)
        nn.init.constant_(self.linear.bias, 0.0)

    @property
    def name(self) -> str:
        """``SAM_<scales>``, e.g. SAM_1-2-3-4 (used in run names)."""
        return "SAM_" + "-".join(str(s) for s in self.scales)

    def output_subsets(self, n: int) -> list[tuple[int, ...]]:
        """The subsets that ``base_forward`` returns a feature for, for a set of ``n`` items."""
        valid = [s for s in self.scales if s <= n]
        if not valid:
            # Spec 9.9 (F): the original fell into a broken path here.
            raise ValueError(f"a set of {n} item(s) is smaller than the smallest scale {self.scales[0]}")
        return canonical_subsets(n, min_size=valid[0])

    @staticmethod
    @lru_cache(maxsize=None)
    def _plan(n: int, scales: tuple[int, ...]) -> tuple[tuple[tuple[int, ...], ...], torch.Tensor]:
        """Raw relation terms (subsets of a scale with its own MLP) and the inclusion matrix [P, R]."""
        valid = [s for s in scales if s <= n]
        raw = [S for s in valid for S in relation_sets(n, s)]
        outputs = canonical_subsets(n, min_size=valid[0])
        include = torch.zeros(len(outputs), len(raw))
        for p, S in enumerate(outputs):
            members = set(S)
            for r, T in enumerate(raw):
                if members.issuperset(T):
                    include[p, r] = 1.0
        return tuple(raw), include

    def base_forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, n, D] -> [B, P, O]: each subset's feature is the sum of the raw relation outputs of
        all its sub-subsets whose size has an MLP (spec 4.3); P = 2^n - 1 for scales starting at 1."""
        n = x.shape[1]
        indices, include = _plan_tensors(n, tuple(self.scales), x.device)  # raises for n < smallest scale
        # One MLP call per subset size, batched over all subsets of that size (the original called the
        # MLP once per subset): [B, C, s, D] -> [B, C, O].
        raw = torch.cat([relation(x[:, index, :]) for relation, index in zip(self.relations, indices)], dim=1)
        return torch.einsum("pr,bro->bpo", include.to(dtype=raw.dtype), raw)  # [B, R, O] -> [B, P, O]

    def pooled_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The base class's TRN-style forward (dead in the release): per-scale mean, learned mix -> [B, O]."""
        n = x.shape[1]
        per_scale = []
        for s, relation in zip(self.scales, self.relations):
            index = torch.tensor(relation_sets(n, s), device=x.device)
            per_scale.append(relation(x[:, index, :]).mean(dim=1))
        stacked = torch.stack(per_scale, dim=-1)  # [B, O, S]
        return F.linear(stacked, self.linear.weight[:, : stacked.shape[-1]], self.linear.bias).squeeze(-1)


@torch.compiler.disable
def _plan_tensors(n: int, scales: tuple[int, ...], device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Index tensors [C, s] of each used scale and the inclusion matrix [P, R] on ``device`` (cached).

    Kept out of torch.compile's tracing: these are constants of (n, scales), built once in Python.
    """
    key = (n, scales, str(device))
    if key not in _PLAN_CACHE:
        valid = [s for s in scales if s <= n]
        if not valid:
            # Spec 9.9 (F): the original fell into a broken path here.
            raise ValueError(f"a set of {n} item(s) is smaller than the smallest scale {scales[0]}")
        _, include = AbstractionRelationModule._plan(n, scales)
        _PLAN_CACHE[key] = ([torch.tensor(relation_sets(n, s), device=device) for s in valid], include.to(device))
    return _PLAN_CACHE[key]


_PLAN_CACHE: dict[tuple, tuple[list[torch.Tensor], torch.Tensor]] = {}


class AbstractionEmbeddingModule(AbstractionRelationModule):
    """The released model: SAM + a semantic-embedding head and a classifier over all graph nodes."""

    def __init__(self, in_features: int = 2048, out_features: int = 2048, num_nodes: int = 391,
                 embedding_dim: int = 300, bottleneck_dim: int = 512, scales: int | list[int] = 4):
        super().__init__(in_features, out_features, bottleneck_dim=bottleneck_dim, scales=scales)
        self.num_nodes = num_nodes
        self.embedding_dim = embedding_dim
        self.last_linear = nn.Linear(out_features, num_nodes)
        self.embedding_linear = nn.Linear(out_features, embedding_dim)

    @classmethod
    def from_config(cls, config: SAMConfig) -> "AbstractionEmbeddingModule":
        """Build from a SAMConfig."""
        return cls(config.in_features, config.out_features, config.num_nodes, config.embedding_dim,
                   config.bottleneck_dim, list(config.scales))

    def config(self) -> SAMConfig:
        """The sizes that rebuild this model."""
        return SAMConfig(self.in_features, self.out_features, self.num_nodes, self.embedding_dim,
                         self.relations[0].relate[1].out_features, list(self.scales))

    def save_pretrained(self, directory: str | Path, metrics_file: str | Path | None = None,
                        training_data: str = "not recorded") -> Path:
        """config.json + model.safetensors + README.md card (metrics from a run's _results.json when given)."""
        from common.pretrained import save_pretrained

        card = {"title": f"Set Abstraction Module ({self.name}, {self.num_nodes} nodes)",
                "paper": "Andonian et al., We have so much in common: Modeling semantic relational set "
                         "abstractions in videos (ECCV 2020)",
                "task": "set abstraction, set completion and odd-one-out over sets of video features",
                "training_data": training_data,
                "how_to_load": "from set_abstraction.model import AbstractionEmbeddingModule\n"
                               "model = AbstractionEmbeddingModule.from_pretrained(DIR)"}
        if metrics_file is not None:
            card["metrics"] = results_metrics(metrics_file)
            card["metrics_source"] = str(metrics_file)
        return save_pretrained(self, directory, paper=PAPER, architecture=type(self).__name__,
                               config=self.config().to_dict(), card=card)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "AbstractionEmbeddingModule":
        """Rebuild and strictly load a save_pretrained directory (no pickle is read)."""
        from common.pretrained import CONFIG_NAME, load_into, read_pretrained

        config, state_dict = read_pretrained(directory, paper=PAPER)
        sizes = {k: v for k, v in config.items() if k not in ("paper", "architecture", "layout_version")}
        path = Path(directory) / CONFIG_NAME
        if config.get("architecture") != cls.__name__:
            raise InputError(path, f"holds a {config.get('architecture')!r}, not {cls.__name__}", field="architecture")
        known = {f.name for f in dataclasses.fields(SAMConfig)}
        for key in sizes:
            if key not in known:
                raise InputError(path, f"unknown key (known: {', '.join(sorted(known))})", field=key)
        model = cls.from_config(SAMConfig(**sizes))
        return load_into(model, state_dict, source=Path(directory) / "model.safetensors")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, n, D] -> (embeddings [B, P, E], node logits [B, num_nodes, P])."""
        feats = self.base_forward(x)
        # Spec 9.2 (K): class dimension second, the layout CrossEntropyLoss takes for K-dim targets.
        return self.embedding_linear(feats), self.last_linear(feats).transpose(-2, -1)

    @torch.no_grad()
    def rank(self, ref: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Cosine distance of each query's singleton embedding to the full-reference abstraction: [B, Q]."""
        ref_e = self.embedding_linear(self.base_forward(ref))[:, -1:]
        # Only g1 matters for singletons, so each query is embedded on its own (spec 4.4).
        q_e = self.embedding_linear(self.relations[0](query.unsqueeze(2)))
        if self.scales[0] != 1:
            raise ValueError("rank needs a scale-1 relation (singleton embeddings)")
        return cosine_distance(ref_e, q_e)

    @torch.no_grad()
    def find_outlier(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distance of each member to the mean non-singleton embedding, and its argsort: ([B, n], [B, n])."""
        n = x.shape[1]
        emb = self.embedding_linear(self.base_forward(x))
        if self.scales[0] != 1:
            raise ValueError("find_outlier needs a scale-1 relation (singleton embeddings)")
        abstraction = emb[:, n:].mean(dim=1, keepdim=True)
        dist = cosine_distance(abstraction, emb[:, :n])
        return dist, dist.argsort(dim=1)


def results_metrics(path: str | Path) -> dict[str, float]:
    """The headline numbers of a ``<name>_results.json`` (test.py / train.py --evaluate) for a model card."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "results file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"invalid JSON ({err})") from None
    if not isinstance(results, dict):
        raise InputError(path, "expected the JSON object test.py writes")
    metrics = {}
    for section, key, name in (("abstraction", "top1@abstr", "abstraction top-1 (%)"),
                               ("abstraction", "top5@abstr", "abstraction top-5 (%)"),
                               ("set_completion", "overall", "set completion Spearman")):
        value = results.get(section, {}).get(key) if isinstance(results.get(section), dict) else None
        if not isinstance(value, (int, float)):
            raise InputError(path, "missing or not a number (expected test.py's results file)",
                             field=f"{section}.{key}")
        metrics[name] = float(value)
    for size, record in sorted((results.get("odd_one_out") or {}).items()):
        if isinstance(record, dict) and isinstance(record.get("top1"), (int, float)):
            metrics[f"odd-one-out top-1, N={size} (%)"] = float(record["top1"])
    return metrics


def cosine_distance(a: torch.Tensor, b: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """1 - cosine similarity along ``dim`` (broadcasting)."""
    return 1.0 - F.cosine_similarity(a, b, dim=dim)


def build_model(config: SAMConfig | str | Path) -> AbstractionEmbeddingModule:
    """Model from a SAMConfig, a config name (moments, kinetics, tiny) or a JSON path."""
    if not isinstance(config, SAMConfig):
        config = SAMConfig.from_json(config)
    return AbstractionEmbeddingModule.from_config(config)
