"""Preprocessing scripts, file formats and the batch layout (spec 2.1-2.6, 3, 10.3)."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from common.errors import InputError
from spatial_captioning.captions import decode_sequence, prepro_labels, prepro_ngrams, reward_string
from spatial_captioning.data import DataLoader, load_cocotalk
from spatial_captioning.features import (grid_vectors, make_bu_data, prepro_bbox_relative_coords, read_bottom_up_tsv,
                                         write_bottom_up_tsv)
from spatial_captioning.synthetic import RARE_WORD


def loader_opt(syn, **kw):
    base = dict(input_json=syn["input_json"], input_label_h5=syn["input_label_h5"],
                input_img_feat_dir=syn["input_img_feat_dir"], input_grid_vec_dir=syn["input_grid_vec_dir"],
                input_rel_box_dir=syn["input_rel_box_dir"], input_fc_feat_dir=syn["input_fc_feat_dir"],
                caption_model="spatial_pe", use_grid=True, batch_size=4, seq_per_img=5, seed=0, train_only=0,
                img_feat_size=32, num_grids=36)
    base.update(kw)
    return SimpleNamespace(**base)


def karpathy(tmp_path, images):
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return path


def img(cocoid, split, sents):
    return {"filepath": "val2014", "filename": f"{cocoid}.jpg", "cocoid": cocoid, "split": split,
            "sentences": [{"tokens": s.split(), "raw": s} for s in sents]}


def test_grid_vector_goldens():
    boxes = np.array([[0, 0, .5, .5], [.25, .25, .75, .75], [.5, 0, 1, .5]])
    want = [[1, 0, 0, 0], [.25, .25, .25, .25], [0, 1, 0, 0]]
    assert np.allclose(grid_vectors(boxes, 4, "cell"), want)
    assert np.allclose(grid_vectors(boxes, 4, "box"), want)
    rel = np.array([[10, 20, 200, 180]]) / np.array([640, 480, 640, 480])
    assert np.allclose(grid_vectors(rel, 4)[0], [0.396, 0, 0, 0], atol=1e-3)
    with pytest.raises(ValueError):
        grid_vectors(boxes, 5)


def test_prepro_labels_vocab_order_unk_last_and_h5(tmp_path):
    data = karpathy(tmp_path, [img(1, "train", ["a b c", "a b"]), img(2, "val", ["b a d e f g", "a a"])])
    info = prepro_labels(str(data), str(tmp_path / "talk.json"), str(tmp_path / "talk"), max_length=4,
                         word_count_threshold=1, verbose=False)
    assert info["ix_to_word"] == {"1": "a", "2": "b", "3": "UNK"}
    with h5py.File(tmp_path / "talk_label.h5") as f:
        assert f["labels"].dtype == np.uint32
        assert f["labels"][()].tolist() == [[1, 2, 3, 0], [1, 2, 0, 0], [2, 1, 3, 3], [1, 1, 0, 0]]
        assert f["label_start_ix"][()].tolist() == [1, 3] and f["label_end_ix"][()].tolist() == [2, 4]
        assert f["label_length"][()].tolist() == [3, 2, 4, 2]
    with pytest.raises(InputError, match="already exists"):
        prepro_labels(str(data), str(tmp_path / "talk.json"), str(tmp_path / "talk"), verbose=False)


def test_prepro_ngrams_uses_full_length_refs_with_eos(tmp_path):
    data = karpathy(tmp_path, [img(1, "train", ["a b c d e"]), img(2, "restval", ["a b"]), img(3, "val", ["b"])])
    prepro_labels(str(data), str(tmp_path / "talk.json"), str(tmp_path / "talk"), max_length=2,
                  word_count_threshold=0, verbose=False)
    prepro_ngrams(str(data), str(tmp_path / "talk.json"), str(tmp_path / "coco-train"), "train", verbose=False)
    with open(tmp_path / "coco-train-words.p", "rb") as f:
        words = pickle.load(f, encoding="latin1")
    with open(tmp_path / "coco-train-idxs.p", "rb") as f:
        idxs = pickle.load(f, encoding="latin1")
    assert words["ref_len"] == 2 and isinstance(words["document_frequency"], defaultdict)
    assert words["document_frequency"][("e", "<eos>")] == 1  # beyond max_length 2: refs are not clipped
    assert words["document_frequency"][("a", "b")] == 2
    assert idxs["document_frequency"][("1", "2")] == 2 and idxs["document_frequency"][("5", "0")] == 1


def test_decode_sequence_and_reward_string():
    assert decode_sequence({"1": "a", "2": "b", "3": "c"}, [[3, 1, 0, 2]]) == ["c a"]
    assert reward_string([3, 1, 0, 2]) == "3 1 0"
    assert reward_string([3, 1, 2]) == "3 1 2"


def test_bottom_up_tsv_round_trip_py3(tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"image_id": i, "image_w": 640, "image_h": 480, "boxes": rng.random((k, 4)).astype(np.float32) * 100,
             "features": rng.random((k, 2048)).astype(np.float32)} for i, k in ((5, 10), (7, 12))]
    (tmp_path / "bu" / "trainval").mkdir(parents=True)
    write_bottom_up_tsv(tmp_path / "bu" / "trainval" / "x.tsv", rows)
    n = make_bu_data(str(tmp_path / "bu"), str(tmp_path / "out"), files=["x.tsv"])
    assert n == 2
    for r in rows:
        feat = np.load(tmp_path / "out_att" / f"{r['image_id']}.npz")["feat"]
        assert np.array_equal(feat, r["features"])
        assert np.array_equal(np.load(tmp_path / "out_box" / f"{r['image_id']}.npy"), r["boxes"])
        assert np.allclose(np.load(tmp_path / "out_fc" / f"{r['image_id']}.npy"), r["features"].mean(0))
    with pytest.raises(InputError, match="not empty"):
        make_bu_data(str(tmp_path / "bu"), str(tmp_path / "out"), files=["x.tsv"])
    bad = tmp_path / "bad.tsv"
    bad.write_text("1\t640\t480\t2\t!!!!\tAAAA\n")
    with pytest.raises(InputError, match="record 0: field 'boxes'"):
        list(read_bottom_up_tsv(bad))


def test_relative_boxes_are_float64_and_use_the_file_stem(tmp_path):
    data = karpathy(tmp_path, [dict(img(1000, "train", ["a"]), width=200, height=100)])
    (tmp_path / "box").mkdir()
    np.save(tmp_path / "box" / "1000.npy", np.array([[20, 10, 300, 50]], dtype=np.float32))
    prepro_bbox_relative_coords(str(data), "", str(tmp_path / "box"), str(tmp_path / "rel"), verbose=False)
    rel = np.load(tmp_path / "rel" / "1000.npy")
    assert rel.dtype == np.float64 and np.allclose(rel, [[0.1, 0.1, 1.0, 0.5]])


def test_synthetic_set_and_batch_layout(syn):
    info = load_cocotalk(syn["input_json"])
    assert info["ix_to_word"][str(len(info["ix_to_word"]))] == "UNK"
    assert RARE_WORD not in info["ix_to_word"].values()
    loader = DataLoader(loader_opt(syn), "train")
    batch = next(iter(loader))
    B, S, T = 4, 5, loader.seq_length()
    N = B * S
    assert batch["img_feats"].shape[0] == N and batch["img_feats"].dtype == torch.float32
    assert batch["labels"].shape == (N, T + 2) and batch["labels"].dtype == torch.int64
    assert (batch["labels"][:, 0] == 0).all() and (batch["labels"][:, -1] == 0).all()
    n_words = (batch["labels"] > 0).sum(1)
    assert torch.equal(batch["label_masks"].sum(1), (n_words + 2).float())
    assert batch["boxes"].shape == (N, batch["img_feats"].shape[1], 36)
    for i in range(B):
        assert torch.equal(batch["img_feats"][i * S], batch["img_feats"][i * S + S - 1])
    ks = [int(m.sum()) for m in batch["img_masks"][::S]] if batch["img_masks"] is not None else None
    assert ks is None or len(set(ks)) > 1
    assert len(batch["gts"]) == B and batch["gts"][0].dtype == np.uint32
    assert set(batch["infos"][0]) == {"ix", "id", "file_path"}


def test_img_masks_none_iff_equal_region_counts(syn):
    loader = DataLoader(loader_opt(syn), "train")
    by_k = defaultdict(list)
    for ix in loader.split_ix:
        by_k[len(loader.load_image(ix)["feat"])].append(ix)
    same = next(v for v in by_k.values() if len(v) >= 2)[:2]
    assert loader.get_batch(same)["img_masks"] is None
    ks = sorted(by_k)
    assert loader.get_batch([by_k[ks[0]][0], by_k[ks[-1]][0]])["img_masks"] is not None


def test_restval_folded_into_train_unless_train_only(tmp_path_factory):
    from spatial_captioning.synthetic import make_synthetic_coco

    syn2 = make_synthetic_coco(tmp_path_factory.mktemp("rv"), n_train=6, n_restval=4, n_val=2, n_test=2,
                               write_images=False)
    assert len(DataLoader(loader_opt(syn2), "train").split_ix) == 10
    assert len(DataLoader(loader_opt(syn2, train_only=1), "train").split_ix) == 6
    assert len(DataLoader(loader_opt(syn2), "val").split_ix) == 2


def test_loader_state_resumes_mid_epoch(syn):
    a = DataLoader(loader_opt(syn), "train")
    it = iter(a)
    next(it)
    state = a.state_dict()
    want = next(it)
    b = DataLoader(loader_opt(syn, seed=123), "train", state=state)
    got = next(iter(b))
    assert [i["id"] for i in got["infos"]] == [i["id"] for i in want["infos"]]
    assert torch.equal(got["labels"], want["labels"])


def test_input_json_must_be_cocotalk(syn, tmp_path):
    with pytest.raises(InputError, match="ix_to_word"):
        load_cocotalk(syn["dataset_json"])
    broken = tmp_path / "talk.json"
    broken.write_text(json.dumps({"ix_to_word": {}, "images": [{"id": 1}]}))
    with pytest.raises(InputError, match="record 0: field 'split'"):
        load_cocotalk(broken)


def test_script_error_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{")
    out = subprocess.run([sys.executable, "-m", "spatial_captioning.scripts.prepro_labels", "--input_json", str(bad),
                          "--output_json", str(tmp_path / "o.json"), "--output_h5", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0 and "not valid JSON" in out.stderr


def test_prepro_areas_script_and_prepro_feats_with_a_local_resnet(syn, tmp_path):
    out = subprocess.run([sys.executable, "-m", "spatial_captioning.prepro_areas", "--input_dir",
                          str(syn["input_box_dir"]), "--output_dir", str(tmp_path / "vec"), "--num_grids", "16",
                          "--input_json", str(syn["input_json"])], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    vec = np.load(tmp_path / "vec" / "1.npy")
    assert vec.shape[1] == 16 and vec.dtype == np.float32
    from transformers import ResNetConfig, ResNetModel

    from spatial_captioning.features import prepro_feats

    torch.manual_seed(0)
    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")) \
        .save_pretrained(tmp_path / "weights" / "resnet101")
    small = karpathy(tmp_path, json.loads(Path(syn["dataset_json"]).read_text())["images"][:2])
    prepro_feats(str(small), str(tmp_path / "rn"), str(syn["image_root"]), att_size=2,
                 model_root=str(tmp_path / "weights"))
    assert np.load(tmp_path / "rn_att" / "1.npz")["feat"].shape == (2, 2, 16)
    assert np.load(tmp_path / "rn_fc" / "1.npy").shape == (16,)
    with pytest.raises(InputError, match="no pretrained"):
        prepro_feats(str(small), str(tmp_path / "rn2"), str(syn["image_root"]), model_root=str(tmp_path / "none"))
