"""Model tests: shapes, the subset-sum rule, subset order, order dependence, released key layout."""
from __future__ import annotations

import itertools

import pytest
import torch

from set_abstraction.convert import parse_key_file
from set_abstraction.model import (AbstractionEmbeddingModule, SAMConfig, canonical_subsets, relation_sets,
                                   subset_key)


def tiny(scales=(1, 2, 3, 4), num_nodes=27) -> AbstractionEmbeddingModule:
    torch.manual_seed(0)
    return AbstractionEmbeddingModule(in_features=16, out_features=8, num_nodes=num_nodes, embedding_dim=300,
                                      bottleneck_dim=6, scales=list(scales))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_output_shapes(n):
    model = tiny()
    emb, logits = model(torch.randn(3, n, 16))
    assert emb.shape == (3, 2**n - 1, 300)
    assert logits.shape == (3, 27, 2**n - 1)


def test_non_default_scales_output_counts():
    x = torch.randn(2, 4, 16)
    assert tiny(scales=(2, 3, 4))(x)[0].shape[1] == 11
    assert tiny(scales=(1, 2))(x)[0].shape[1] == 15
    # Spec 9.9 (F): a set smaller than the smallest scale raises instead of a broken fallback.
    with pytest.raises(ValueError, match="smaller than the smallest scale"):
        tiny(scales=(3, 4))(torch.randn(2, 2, 16))


def reference_base_forward(model: AbstractionEmbeddingModule, x: torch.Tensor) -> torch.Tensor:
    """Spec 4.3 pseudo-code, literally: a powerset loop summing raw relation outputs of sub-subsets."""
    n = x.shape[1]
    valid = [s for s in model.scales if s <= n]
    raw, out = {}, []
    for s in range(1, n + 1):
        if s in valid:
            rel = model.relations[valid.index(s)]
            for S in itertools.combinations(range(n), s):
                raw[S] = rel.relate(x[:, list(S), :].reshape(x.shape[0], -1)).unsqueeze(1)
                out.append(sum(raw[T] for T in raw if set(T) <= set(S)))
        else:
            for S in itertools.combinations(range(n), s):
                if raw:
                    out.append(sum(raw[T] for T in raw if set(T) <= set(S)))
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("scales,n", [((1, 2, 3, 4), 4), ((1, 2, 3, 4), 5), ((2, 3, 4), 4), ((1, 2), 4), ((2, 4), 4)])
def test_subset_sum_rule_matches_powerset_reference(scales, n):
    model = tiny(scales)
    x = torch.randn(3, n, 16)
    torch.testing.assert_close(model.base_forward(x), reference_base_forward(model, x), rtol=1e-5, atol=1e-5)


def test_canonical_subset_order_and_keys():
    subsets = canonical_subsets(4)
    assert [subset_key(S) for S in subsets] == ["0", "1", "2", "3", "0,1", "0,2", "0,3", "1,2", "1,3", "2,3",
                                                "0,1,2", "0,1,3", "0,2,3", "1,2,3", "0,1,2,3"]
    assert relation_sets(4, 2) == ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def test_order_dependence_is_preserved():
    model = tiny()
    x = torch.randn(2, 4, 16)
    swapped = x[:, [1, 0, 2, 3]]
    emb, _ = model(x)
    emb_s, _ = model(swapped)
    # Spec 9.2 (K): concatenation in set order, so the pair {0,1} changes when its members swap.
    assert not torch.allclose(emb[:, 4], emb_s[:, 4])
    torch.testing.assert_close(emb[:, 0], emb_s[:, 1])  # singletons just move


def test_unused_linear_parameter_kept():
    model = tiny()
    assert model.linear.weight.shape == (1, 4) and torch.all(model.linear.weight == 1.0)
    assert torch.all(model.linear.bias == 0.0)
    emb, logits = model(torch.randn(2, 4, 16))
    (emb.sum() + logits.sum()).backward()
    assert model.linear.weight.grad is None  # unused by forward, as in the release (spec 9.17 K)


@pytest.mark.parametrize("dataset", ["moments", "kinetics"])
def test_state_dict_layout_equals_released_keys(fixtures_dir, dataset):
    expected = parse_key_file(fixtures_dir / "set_abstraction_state_dict_keys.txt")[dataset]
    with torch.device("meta"):
        model = AbstractionEmbeddingModule.from_config(SAMConfig.from_json(dataset))
    got = {"module." + k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert list(got) == list(expected)
    assert got == expected
    total = sum(v.numel() for v in model.parameters())
    assert total == {"moments": 16106168, "kinetics": 16550801}[dataset]


def test_tiny_spec_config_parameter_count():
    model = AbstractionEmbeddingModule.from_config(SAMConfig.from_json("tiny"))
    assert sum(p.numel() for p in model.parameters()) == 111756


def test_rank_equals_full_query_forward():
    """Only g1 matters for query singletons (spec 4.4): our shortcut equals the original computation."""
    model = tiny()
    ref, query = torch.randn(1, 3, 16), torch.randn(1, 5, 16)
    ref_e = model.embedding_linear(model.base_forward(ref))[:, -1:]
    q_e = model.embedding_linear(model.base_forward(query))[:, :5]
    expected = 1 - torch.nn.functional.cosine_similarity(ref_e, q_e, dim=-1)
    torch.testing.assert_close(model.rank(ref, query), expected, rtol=1e-5, atol=1e-6)


def test_find_outlier_uses_non_singleton_mean():
    model = tiny()
    x = torch.randn(1, 4, 16)
    dist, order = model.find_outlier(x)
    emb = model.embedding_linear(model.base_forward(x))
    a = emb[:, 4:].mean(dim=1, keepdim=True)
    torch.testing.assert_close(dist, 1 - torch.nn.functional.cosine_similarity(a, emb[:, :4], dim=-1))
    assert order.tolist() == [dist[0].argsort().tolist()]
