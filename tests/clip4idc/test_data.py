"""Spec 3: loaders on the synthetic fixtures (tuple order, dtypes, shapes, encodings), Spot reformat and
GT builders, IER loader, and one-line errors for malformed input."""
import json
import random

import numpy as np
import pytest

from common.errors import InputError
from clip4idc.data import ClevrChange, Sampler, build_dataset
from clip4idc.data.images import load_image
from clip4idc.data.spot import read_annotations, reformat, spot_gt
from clip4idc.data.text import caption_text, retrieval_text


def test_caption_encoding_matches_spec(tokenizer):
    text, mask, seg, in_ids, dec_mask, out_ids = caption_text(tokenizer, "the blue cube changed to red", 32)
    assert text[0, :3].tolist() == [49406, 49407, 0] and mask[0, :3].tolist() == [1, 1, 0]
    assert in_ids[0, :8].tolist() == [49406, 518, 1746, 11353, 4907, 531, 736, 0]
    assert out_ids[0, :8].tolist() == [518, 1746, 11353, 4907, 531, 736, 49407, 0]
    assert dec_mask[0, :8].tolist() == [1, 1, 1, 1, 1, 1, 1, 0]
    assert all(a.shape == (1, 32) and a.dtype == np.int64 for a in (text, mask, seg, in_ids, dec_mask, out_ids))
    ids, m, s = retrieval_text(tokenizer, "the blue cube changed to red", 5)
    assert ids[0].tolist() == [49406, 518, 1746, 11353, 49407] and m[0].tolist() == [1] * 5 and s.sum() == 0


def test_clevr_loaders(syn_root, tokenizer):
    root = syn_root / "clevr"
    ret = build_dataset("clevr", "retrieval", "test", root, "", tokenizer, 10, 28)
    item = ret[0]
    assert len(item) == 6
    assert item[0].shape == (1, 10) and item[3].shape == (1, 3, 28, 28) and item[3].dtype == np.float32
    assert item[5].tolist() == [1, 1]
    assert ret.cut_off_points[-1] == len(ret) and len(ret.cut_off_points) == 16
    cap = build_dataset("clevr", "caption", "test", root, "", tokenizer, 10, 28)
    item = cap[0]
    assert len(item) == 14 and isinstance(item[-1], str) and item[-1].endswith(".png")
    assert item[5].shape == (1, 3, 28, 28)  # distractor image
    sid = cap.scenes[0]
    assert tokenizer.decode([t for t in item[10][0] if t][1:]).strip() in cap.data.no_change[f"CLEVR_default_{sid}.png"]


def test_retrieval_train_swaps_distractor_half_the_time(syn_root, tokenizer):
    ds = build_dataset("clevr", "retrieval", "train", syn_root / "clevr", "", tokenizer, 10, 28)
    data = ds.data
    random.seed(0)
    swaps = 0
    for i in range(len(ds)):
        bef = ds[i][3]
        sid = ds.items[i][0]
        swaps += not np.array_equal(bef, load_image(data.paths(sid)[0], 28))
    assert 0.25 < swaps / len(ds) < 0.75


def test_per_index_rng_is_deterministic(syn_root, tokenizer):
    ds = build_dataset("clevr", "caption", "train", syn_root / "clevr", "", tokenizer, 10, 28, Sampler(True, 3))
    first = [ds[i][10].tolist() for i in range(10)]
    random.seed(123)
    assert [ds[i][10].tolist() for i in range(10)] == first


def test_spot_reformat_and_gt(syn_root, tokenizer):
    raw = read_annotations(syn_root / "spot" / "test.json")
    merged = reformat(raw)
    assert len(raw) == len(merged) + 1  # one img_id appears twice in the raw file
    first = merged[0]
    assert first["sentences"][-2:] == ["there is a change", ""]
    gt = spot_gt(syn_root / "spot" / "test.json")
    assert list(gt) == ["info", "licenses", "type", "images", "annotations"]
    assert gt["info"] == gt["licenses"] and gt["type"] == "captions"
    assert len(gt["images"]) == len(raw) and len({i["id"] for i in gt["images"]}) == len(merged)
    assert [a["id"] for a in gt["annotations"]] == list(range(len(gt["annotations"])))
    assert gt["images"][0] == {"filename": f"{raw[0]['img_id']}.png", "id": f"{raw[0]['img_id']}.png"}
    assert sum(a["caption"] == "" for a in gt["annotations"]) == 1  # empty GT captions kept (spec 9.18)
    ds = build_dataset("spot", "caption", "test", syn_root / "spot", syn_root / "spot" / "images", tokenizer, 10, 28)
    assert len(ds[0]) == 10 and ds[0][-1] == f"{merged[0]['img_id']}.png"
    ret = build_dataset("spot", "retrieval", "test", syn_root / "spot", syn_root / "spot" / "images", tokenizer, 10, 28)
    assert len(ret) == sum(len(r["sentences"]) for r in merged)


def test_clevr_gt_merge_rule(syn_root):
    data = ClevrChange(syn_root / "clevr")
    gt = data.gt()
    n_change = sum(len(v) for v in data.change.values())
    assert gt["annotations"][0]["image_id"] == "000000.png"
    assert gt["annotations"][n_change]["image_id"] == "000000.png_n"
    assert all(a["image_id"].endswith("_n") for a in gt["annotations"][n_change:])
    assert set(data.type_mapping()) == {"color", "material", "add", "drop", "move"}


def test_ier_loader(syn_root, tokenizer):
    ds = build_dataset("ier", "caption", "val", syn_root / "ier", syn_root / "ier" / "images", tokenizer, 10, 28)
    assert len(ds[0]) == 10
    ret = build_dataset("ier", "retrieval", "test", syn_root / "ier", syn_root / "ier" / "images", tokenizer, 10, 28)
    assert len(ret) == 3 * len(ret.pairs)  # three requests per test pair


def test_malformed_input_names_file_record_field(tmp_path, syn_root, tokenizer):
    bad = tmp_path / "reformat_test.json"
    bad.write_text(json.dumps([{"img_id": "1", "sentences": ["ok"]}, {"img_id": "2", "sentences": "oops"}]))
    with pytest.raises(InputError) as err:
        build_dataset("spot", "caption", "test", tmp_path, tmp_path, tokenizer, 10, 28)
    assert str(err.value) == f"{bad}: record 1: field 'sentences': expected a list of strings"
    ier = tmp_path / "test.json"
    ier.write_text(json.dumps([{"img0": "a.png", "sents": ["x"], "uid": 1}]))
    with pytest.raises(InputError, match="record 0: field 'img1'"):
        build_dataset("ier", "caption", "test", tmp_path, tmp_path, tokenizer, 10, 28)
    (tmp_path / "broken.json").write_text("{not json")
    from clip4idc.data.common import read_json
    with pytest.raises(InputError, match="invalid JSON"):
        read_json(tmp_path / "broken.json")
