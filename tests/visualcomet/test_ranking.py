"""Ranking: candidates, recall, output schema, candidate files, the curated learning metric (assert 9)."""
from __future__ import annotations

import json

import pytest
import torch

from common.errors import InputError
from visualcomet import data as vdata
from visualcomet import ranking
from visualcomet.model import VisualCometLMHead, make_config


def _records(n_img=4):
    recs = []
    for i in range(n_img):
        for rel in ("intent", "after"):
            for s in range(2):
                recs.append({"img_fn": f"m{i % 2}/{i}.jpg", "event": "e", "movie": f"M{i % 2}",
                             "inference_relation": rel, "inference_text": f"s{i}{rel}{s}"})
    return recs


def test_candidates_are_seeded_and_gt_first():
    recs = _records()
    a = ranking.build_candidates(recs, "random_6", seed=1)
    b = ranking.build_candidates(recs, "random_6", seed=1)
    c = ranking.build_candidates(recs, "random_6", seed=2)
    assert a == b and a != c  # seeded (pitfall 10)
    assert len(a) == 8  # one query per (image, event, relation)
    q = a[0]
    assert q["inference_candidate_indices"][:2] == [0, 1] and q["num_gt"] == 2
    assert len(q["inference_candidate_indices"]) == 6 and len(set(q["inference_candidate_indices"])) == 6
    movie = ranking.build_candidates(recs, "movie_6", seed=1)
    same = [recs[j]["movie"] for j in movie[0]["inference_candidate_indices"][2:]]
    assert same == ["M0"] * 4  # negatives from the same movie first (pitfall 12 fixed)
    inf = ranking.build_candidates(recs, "inference_50")
    assert inf[0]["inference_candidate_indices"] == [0, 1, 2, 3]  # other relations of the same image+event
    with pytest.raises(InputError):
        ranking.build_candidates(recs, "random_99")
    with pytest.raises(InputError):
        ranking.parse_rank_mode("best_5")


def test_candidate_batch_replaces_only_event_and_place():
    lay = vdata.Layout(3, 2, 4, 26)
    ex = [[k * 100 + p for p in range(26)] for k in range(3)]
    lab = [[-(k * 100 + p) for p in range(26)] for k in range(3)]
    ids, labs = ranking.candidate_batch({"query_index": 1, "inference_candidate_indices": [1, 0, 2]}, ex, lab, lay)
    assert ids[1, :17].tolist() == ex[0][:17] and ids[1, 22:].tolist() == ex[0][22:]
    assert ids[1, 17:22].tolist() == ex[1][17:22] and labs[2, 17:22].tolist() == lab[1][17:22]


def test_rank_with_fixed_candidate_file_recall_and_schema(vc_data, vc_tokenizer, vc_paths, tmp_path):
    torch.manual_seed(0)
    model = VisualCometLMHead(make_config(vocab_size=len(vc_tokenizer), n_layer=1, n_head=2, n_embd=32)).eval()
    lay, splits = vdata.build_finetune_data(vc_paths, vc_tokenizer, 40)
    ex, lab, recs = splits["val"]
    ds = vdata.VCGDataset(recs, ex, lab, vc_tokenizer, vc_paths)
    cand_file = tmp_path / "val_rank_random_4.json"
    cand_file.write_text(json.dumps({"mean_recall": 0.0, "results": [
        {"inference_candidate_indices": [0, 1, 20, 30], "num_gt": 2},
        {"inference_candidate_indices": [2, 3, 40, 50]}]}))
    queries = ranking.load_candidates(cand_file, recs)
    assert [q["num_gt"] for q in queries] == [2, 2]
    out = ranking.rank(model, ds, lay, queries, torch.device("cpu"))
    res = out["results"][0]
    for key in ("inference_candidate_indices", "rank", "num_gt", "recall", "event_idx", "inference_text"):
        assert key in res
    assert sorted(res["rank"]) == [0, 1, 2, 3]
    # recall = share of the top num_gt positions that are GT (GT are listed first)
    assert res["recall"] == sum(p < 2 for p in res["rank"][:2]) / 2
    assert out["mean_recall"] == pytest.approx(sum(r["recall"] for r in out["results"]) / 2)
    # scores are an argsort of the per-candidate rank scores
    ids, labs = ranking.candidate_batch(queries[0], ex, lab, lay)
    item = ds[0]
    vis = {k: v[None] for k, v in item.items() if k not in ("input_ids", "labels", "index")}
    scores = ranking.score_candidates(model, ids, labs, vis)
    assert res["rank"] == torch.argsort(scores).tolist()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"results": [{"inference_candidate_indices": [0, 9999]}]}))
    with pytest.raises(InputError, match="record 0: field 'inference_candidate_indices'"):
        ranking.load_candidates(bad, recs)
