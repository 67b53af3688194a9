"""Loaders of the released formats, on synthetic fixtures: joins, graph, items, malformed input."""
from __future__ import annotations

import json
import shutil

import networkx as nx
import pytest
import torch

from common.errors import InputError
from set_abstraction.data import (CachedAbstractionDataset, CachedOutlierDataset, CachedRankingDataset, FeatureStore,
                                  load_abstraction_sets, load_human_sets, read_listfile)
from set_abstraction.graph import load_category_embeddings, load_graph
from set_abstraction.model import canonical_subsets


def _class_of(listfile):
    return {line.split()[0]: int(line.split()[2]) for line in listfile.read_text().splitlines()}


def _cluster_accuracy(store: FeatureStore, classes: dict[str, int]) -> float:
    """Nearest-class-mean accuracy of the features under the store's name -> row join."""
    names = list(classes)
    x = store.features[[store.row(n) for n in names]].float()
    y = torch.tensor([classes[n] for n in names])
    means = torch.stack([x[y == c].mean(0) for c in range(int(y.max()) + 1)])
    return (torch.cdist(x, means).argmin(1) == y).float().mean().item()


def test_moments_rows_follow_embeddings_order(syn_dir):
    classes = _class_of(syn_dir / "moments_train_listfile.txt")
    store = FeatureStore(syn_dir / "resnet3d50_moments_train_features.pth", "moments",
                         syn_dir / "moments_train_embeddings.pth")
    assert list(store.index) == list(torch.load(syn_dir / "moments_train_embeddings.pth", weights_only=True))
    assert _cluster_accuracy(store, classes) > 0.95
    # Joining by listfile order instead (wrong for moments train/val) scrambles the classes.
    wrong = FeatureStore(syn_dir / "resnet3d50_moments_train_features.pth", "kinetics",
                         listfile_path=syn_dir / "moments_train_listfile.txt")
    wrong.index = {k[: -len(".mp4")]: v for k, v in wrong.index.items()}
    assert _cluster_accuracy(wrong, classes) < 0.5


def test_kinetics_rows_follow_listfile_with_mp4(syn_dir):
    classes = {k + ".mp4": v for k, v in _class_of(syn_dir / "kinetics_val_listfile.txt").items()}
    store = FeatureStore(syn_dir / "resnet3d50_kinetics_val_features.pth", "kinetics",
                         syn_dir / "kinetics_val_embeddings.pth", syn_dir / "kinetics_val_listfile.txt")
    assert all(name.endswith(".mp4") for name in store.index)
    assert _cluster_accuracy(store, classes) > 0.95


def test_human_paths_multi_test_to_test_multi(syn_dir):
    raw = json.loads((syn_dir / "moments_human_abstraction_sets.json").read_text())
    assert raw["2"][0]["reference"][0][0].startswith("multi_test/")
    sets = load_human_sets(syn_dir / "moments_human_abstraction_sets.json")
    assert list(sets) == ["2", "3", "4"] and len(sets["3"]) == 20
    assert sets["2"][0].reference[0].startswith("test_multi/")
    store = FeatureStore(syn_dir / "resnet3d50_moments_test_features.pth", "moments",
                         listfile_path=syn_dir / "moments_test_listfile.txt")
    ranking = CachedRankingDataset(syn_dir / "moments_human_abstraction_sets.json", store)
    ref, query = ranking[0]
    assert ref.shape == (2, 256) and query.shape == (5, 256)


def test_outlier_items_put_max_dist_query_last(syn_dir):
    store = FeatureStore(syn_dir / "resnet3d50_kinetics_test_features.pth", "kinetics",
                         listfile_path=syn_dir / "kinetics_test_listfile.txt")
    data = CachedOutlierDataset(syn_dir / "kinetics_human_abstraction_sets.json", store)
    rec = data.records[5]
    x, target = data[5]
    assert x.shape[0] == len(rec.reference) + 1 and target.tolist() == [len(rec.reference)]
    worst = max(range(5), key=lambda j: rec.query_dists[j])
    torch.testing.assert_close(x[-1], store.features[store.row(rec.query[worst])])


def test_graph_with_links_loads_under_networkx_3(syn_dir, tmp_path):
    data = json.loads((syn_dir / "moments_graph.json").read_text())
    assert "links" in data and "edges" not in data
    with pytest.raises(KeyError):  # spec 9.4: networkx >= 3.4 defaults to 'edges'
        nx.node_link_graph(data)
    graph = load_graph(syn_dir / "moments_graph.json")
    assert graph.num_nodes == 27 and graph.number_of_edges() == 26
    assert graph.category_to_node("action 03") == "act03.v.01"
    assert graph.category_to_node("group1.v.01") == "group1.v.01"
    assert graph.lowest_common_ancestor("act00.v.01", "act01.v.01") == ["group0.v.01"]
    assert graph.lowest_common_ancestor("act00.v.01", "act17.v.01") == ["root"]
    data["edges"] = data.pop("links")
    (tmp_path / "g.json").write_text(json.dumps(data))
    assert load_graph(tmp_path / "g.json").number_of_edges() == 26


def test_dataset_items_2048_and_lca_labels(syn2048_dir):
    graph = load_graph(syn2048_dir / "moments_graph.json")
    cat = load_category_embeddings(syn2048_dir / "moments_category_embeddings.pth", graph)
    store = FeatureStore(syn2048_dir / "resnet3d50_moments_val_features.pth", "moments",
                         syn2048_dir / "moments_val_embeddings.pth")
    data = CachedAbstractionDataset(syn2048_dir / "moments_val_abstraction_sets.json", store, graph, cat)
    features, (embeddings, labels) = data[0]
    assert features.shape == (4, 2048) and embeddings.shape == (15, 300) and labels.shape == (15,)
    assert labels.dtype == torch.long
    rec = data.records[0]
    classes = [graph.label_to_node(int(labels[i])) for i in range(4)]
    for p, S in enumerate(canonical_subsets(4)):
        if len(S) > 1:
            expected = graph.lowest_common_ancestor(*[classes[i] for i in S])
            assert graph.label_to_node(int(labels[p])) in expected
            torch.testing.assert_close(embeddings[p], cat[graph.label_to_node(int(labels[p]))])
    torch.testing.assert_close(embeddings[0], store.embeddings[rec.videos[0]])
    torch.testing.assert_close(features[1], store.features[store.row(rec.videos[1])])


def _copy(src, dst, *names):
    for n in names:
        shutil.copy(src / n, dst / n)


def test_malformed_sets_name_file_record_field(syn2048_dir, tmp_path):
    sets = json.loads((syn2048_dir / "moments_val_abstraction_sets.json").read_text())
    sets[3]["labels"]["0,2"] = ["root", "top0.v.01"]
    path = tmp_path / "sets.json"
    path.write_text(json.dumps(sets))
    with pytest.raises(InputError) as exc:
        load_abstraction_sets(path)
    assert str(exc.value).startswith(f"{path}: record 3: field 'labels.0,2': ")
    sets[3]["labels"]["0,2"] = ["root"]
    sets[5]["videos"][2] = "nowhere.mp4"
    path.write_text(json.dumps(sets))
    graph = load_graph(syn2048_dir / "moments_graph.json")
    cat = load_category_embeddings(syn2048_dir / "moments_category_embeddings.pth", graph)
    store = FeatureStore(syn2048_dir / "resnet3d50_moments_val_features.pth", "moments",
                         syn2048_dir / "moments_val_embeddings.pth")
    with pytest.raises(InputError, match="record 5: field 'videos'.*nowhere.mp4"):
        CachedAbstractionDataset(path, store, graph, cat)
    sets[5]["videos"][2] = sets[4]["videos"][2]
    sets[6]["labels"]["1,2,3"] = ["no_such_node"]
    path.write_text(json.dumps(sets))
    with pytest.raises(InputError, match="record 6: field 'labels.1,2,3'"):
        CachedAbstractionDataset(path, store, graph, cat)


def test_malformed_listfile_graph_and_human_sets(syn2048_dir, tmp_path):
    lf = tmp_path / "l.txt"
    lf.write_text("a/b 30 1\nc/d thirty 2\n")
    with pytest.raises(InputError, match="record line 2: field 'column 1'"):
        read_listfile(lf)
    data = json.loads((syn2048_dir / "moments_graph.json").read_text())
    del data["nodes"][4]["label"]
    (tmp_path / "g.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="field 'label'"):
        load_graph(tmp_path / "g.json")
    human = json.loads((syn2048_dir / "moments_human_abstraction_sets.json").read_text())
    human["3"][1]["query"] = human["3"][1]["query"][:4]
    (tmp_path / "h.json").write_text(json.dumps(human))
    with pytest.raises(InputError, match=r"record 3\[1\]: field 'query': needs exactly 5"):
        load_human_sets(tmp_path / "h.json")
    (tmp_path / "bad.pth").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="bad.pth"):
        FeatureStore(tmp_path / "bad.pth", "moments", listfile_path=lf)


class _NotATensor:
    pass


def test_pickles_needing_full_unpickling_are_refused(tmp_path):
    """Spec 9.5 (F), issue 11: metadata is read weights-only / restricted on CPU; other classes are refused."""
    torch.save({"v.mp4": _NotATensor()}, tmp_path / "e.pth")
    with pytest.raises(InputError, match="e.pth: refused to unpickle: it wants to call .*_NotATensor"):
        FeatureStore(tmp_path / "e.pth", "moments")


def test_legacy_torch_save_format_features_load(tmp_path):
    """Pre-zipfile torch.save files (older releases) cannot be memory-mapped; they load in RAM instead."""
    feats = torch.randn(2, 8)
    torch.save(feats, tmp_path / "f.pth", _use_new_zipfile_serialization=False)
    (tmp_path / "l.txt").write_text("a 1 0\nb 1 0\n")
    store = FeatureStore(tmp_path / "f.pth", "moments", listfile_path=tmp_path / "l.txt")
    torch.testing.assert_close(store.features[store.row("b")], feats[1])
