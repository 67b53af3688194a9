"""Data: person rewriting, records, sequence layout, labels, visual tensors, loaders (section 10 asserts 2-4, 6)."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from common.errors import InputError
from visualcomet import data as vdata


def test_map_numbers_spec_examples():
    text, mapping = vdata.map_numbers("1 is trying to talk to 3's friend, 2.")
    assert text == "<|det1|> is trying to talk to <|det3|>  's friend , <|det2|>."
    assert mapping == {"1": "<|det1|>", "3": "<|det3|>", "2": "<|det2|>"}
    assert vdata.map_numbers("don't ask 3 to dance")[0] == "don  't ask <|det3|> to dance"
    # kept quirks (pitfall 3): "3.5" and ids >= 50
    assert vdata.map_numbers("drink 3.5 beers")[0] == "drink <|det3|>.5 beers"
    assert vdata.map_numbers("greet 51")[0] == "greet <|det51|>"


def test_replace_names():
    assert vdata.replace_names("ask <|det3|> and <|det7|>", {"<|det3|>": "3"}) == "ask 3 and 7"


def test_finetune_and_generation_records():
    ann = {"img_fn": "m/a.jpg", "movie": "M", "metadata_fn": "m/a.json", "split": "val", "place": "in a kitchen",
           "event": "1 is cooking dinner", "intent": ["feed 2"], "after": ["serve the food to 3", "wash up"]}
    recs = vdata.finetune_records([ann])
    assert [(r["inference_relation"], r["inference_text"]) for r in recs] == [
        ("intent", "feed 2"), ("after", "serve the food to 3"), ("after", "wash up")]
    assert recs[1]["inference_text_name"] == "serve the food to <|det3|>"
    assert recs[1]["person2name"] == {"1": "<|det1|>", "3": "<|det3|>"}
    assert recs[2]["person2name"] == {"1": "<|det1|>"}
    gen = vdata.generation_records([ann])
    assert [r["inference_relation"] for r in gen] == ["intent", "before", "after"]
    # val generation leaks the ids of all GT inferences of the relation (pitfall 7, K)
    assert gen[2]["person2name"] == {"1": "<|det1|>", "3": "<|det3|>"}
    assert "inference_text" not in gen[1]


def _record(vc_tokenizer, event="1 is here with 2", inference="serve the food to 2", rel="after"):
    ev, m = vdata.map_numbers(event)
    inf, m = vdata.map_numbers(inference, dict(m))
    return {"img_fn": "x/y.jpg", "metadata_fn": "x/y.json", "event": event, "place": "in a room", "event_name": ev,
            "inference_relation": rel, "inference_text": inference, "inference_text_name": inf, "person2name": m,
            "name2person": {v: k for k, v in m.items()}, "event_idx": 0}


def test_layout_positions_padding_and_labels(vc_tokenizer):
    tok = vc_tokenizer
    rec = _record(tok)
    lens = [len(tok.encode(t)) for t in vdata.segment_texts(rec)]
    lay = vdata.Layout(lens[1] + 2, lens[2] + 1, lens[3] + 3, 64)
    ids, labels = vdata.encode_record(rec, tok, lay)
    assert len(ids) == len(labels) == 64
    conv = tok.convert_tokens_to_ids
    assert ids[0] == conv("<|b_img|>") and ids[1:16] == [tok.eot_id] * 15 and ids[16] == conv("<|e_img|>")
    assert ids[17] == conv("<|b_ev|>") and ids[lay.place_start] == conv("<|b_pl|>")
    assert ids[lay.inference_start] == conv("<|after|>")
    assert ids[-1] == tok.eot_id  # right-padded with <|endoftext|>
    # labels: inference tokens + <|e_in|>, nothing else (assert 6)
    e_in = ids.index(conv("<|e_in|>"))
    labelled = [i for i, v in enumerate(labels) if v != vdata.IGNORE_INDEX]
    assert labelled == list(range(lay.inference_start + 1, e_in + 1))
    assert len(labelled) == lens[3] - 1  # inference length + 1 (<|e_in|>)
    _, labels_all = vdata.encode_record(rec, tok, lay, mode="all")
    extra = sum(v != vdata.IGNORE_INDEX for v in labels_all) - len(labelled)
    assert extra == (lens[1] - 1) + (lens[2] - 1)  # event and place tokens incl. their end tokens


def test_no_text_blanking_and_mode_all_refused(vc_tokenizer):
    tok = vc_tokenizer
    lay = vdata.Layout(9, 6, 10, 64)
    ids, _ = vdata.encode_record(_record(tok), tok, lay)
    blank, labels = vdata.encode_record(_record(tok), tok, lay, include_text=False)
    assert blank[17:lay.inference_start] == [tok.eot_id] * (lay.inference_start - 17)
    assert blank[:17] == ids[:17] and blank[lay.inference_start:] == ids[lay.inference_start:]
    with pytest.raises(ValueError, match="no_text"):
        vdata.encode_record(_record(tok), tok, lay, mode="all", include_text=False)


def test_truncation_rules(vc_tokenizer):
    tok = vc_tokenizer
    rec = _record(tok, event="1 is here with 2 and 3 and 1 and 2 again", inference="serve the food to 2 and wash")
    lay = vdata.Layout(4, 3, 3, 30)
    ids, labels = vdata.encode_record(rec, tok, lay)
    conv = tok.convert_tokens_to_ids
    # event cut to max-1 tokens + its end token
    assert ids[17 + 3] == conv("<|e_ev|>") and ids[17] == conv("<|b_ev|>")
    # inference is never truncated by its own max, but the whole is cut to max_seq_len-1 + <|e_in|>
    assert len(ids) == 30 and ids[-1] == conv("<|e_in|>")
    assert labels[-1] == conv("<|e_in|>")
    gen, _ = vdata.encode_record(rec, tok, lay, generation=True)
    assert len(gen) == lay.inference_start + 1 and gen[-1] == conv("<|after|>")


def test_visual_inputs_selection_and_shapes(vc_data, vc_tokenizer, vc_paths):
    tok = vc_tokenizer
    annots = json.loads((vc_data / "train_annots.json").read_text())
    rec = vdata.finetune_records(annots)[0]  # event "1 is here with 2" -> people 1 and 2
    v = vdata.visual_inputs(rec, tok, vc_paths.images_dir, vc_paths.features_dir)
    assert v["img_feats"].shape == (15, 2048) and v["boxes"].shape == (15, 4)
    assert v["boxes_mask"].tolist()[:4] == [1, 1, 1, 0]
    assert v["objects"].tolist()[:4] == [0, 1, 1, 0]
    det = tok.convert_tokens_to_ids
    assert v["person_ids"].tolist()[:4] == [det("<|det0|>"), det("<|det1|>"), det("<|det2|>"), 0]
    meta = json.loads((vc_paths.images_dir / rec["metadata_fn"]).read_text())
    assert v["boxes"][0].tolist() == [0.0, 0.0, meta["width"], meta["height"]]
    # all detections: image + 8 objects; non-person objects get person id 0 (pitfall 6)
    v_all = vdata.visual_inputs(rec, tok, vc_paths.images_dir, vc_paths.features_dir, use_all_dets=True)
    assert int(v_all["boxes_mask"].sum()) == 9 and v_all["person_ids"][4:9].tolist() == [0] * 5
    # nobody mentioned -> all persons
    assert vdata.select_detections({}, meta["names"]) == [0, 1, 2]
    assert vdata.select_detections({"9": "<|det9|>"}, meta["names"]) == [0, 1, 2]
    masks = vdata.visual_inputs(rec, tok, vc_paths.images_dir, vc_paths.features_dir, with_masks=True)["segments"]
    assert masks.shape == (15, 14, 14) and masks[1].sum() > 0


def test_visual_truncation_and_box_clipping(tmp_path, vc_tokenizer):
    names = ["person"] * 20
    boxes = [[1.0 * j, 2.0, 700.0, 400.0, 0.9] for j in range(20)]
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.json").write_text(json.dumps({"boxes": boxes, "names": names, "width": 640, "height": 360}))
    (tmp_path / "feat").mkdir()
    with open(tmp_path / "feat" / "a.pkl", "wb") as f:
        pickle.dump({"image_features": np.zeros(8, np.float32), "object_features": np.ones((20, 8), np.float32)}, f)
    rec = {"img_fn": "a.jpg", "metadata_fn": "a.json", "person2name": {}}
    v = vdata.visual_inputs(rec, vc_tokenizer, tmp_path / "img", tmp_path / "feat", use_all_dets=True)
    assert int(v["boxes_mask"].sum()) == 15  # image + first 14 detections
    assert v["boxes"][1].tolist() == [0.0, 2.0, 640.0, 360.0]


def test_malformed_inputs_name_file_record_field(tmp_path):
    bad = tmp_path / "val_annots.json"
    bad.write_text(json.dumps([{"img_fn": "a.jpg", "metadata_fn": "a.json", "event": "x", "place": "y"},
                               {"img_fn": "a.jpg", "metadata_fn": "a.json", "event": 3, "place": "y"}]))
    with pytest.raises(InputError) as err:
        vdata.load_annotations(bad)
    assert str(err.value) == f"{bad}: record 1: field 'event': missing or not a string"
    meta = tmp_path / "m.json"
    meta.write_text(json.dumps({"boxes": [[5, 5, 4, 9, 1]], "names": ["person"], "width": 10, "height": 10}))
    with pytest.raises(InputError, match="record 0: field 'boxes'"):
        vdata.load_metadata(str(meta))
    meta.write_text(json.dumps({"boxes": [[1, 1, 4, 9, 1]], "names": ["unicorn"], "width": 10, "height": 10}))
    with pytest.raises(InputError, match="field 'names'"):
        vdata.load_metadata(str(meta))
    # a missing split key is filled in (the original crashed in run_generation)
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps([{"img_fn": "a.jpg", "metadata_fn": "a.json", "event": "x", "place": "y"}]))
    assert vdata.load_annotations(ok, "val")[0]["split"] == "val"


def test_vcr_paths_options_env_and_defaults(vc_data, monkeypatch):
    monkeypatch.delenv("VCR_IMAGES_DIR", raising=False)
    monkeypatch.delenv("VCR_FEATURES_DIR", raising=False)
    p = vdata.DataPaths.resolve(str(vc_data))
    assert (p.images_dir, p.features_dir) == (vc_data / "vcr1images", vc_data / "features")
    monkeypatch.setenv("VCR_IMAGES_DIR", "/env/images")
    monkeypatch.setenv("VCR_FEATURES_DIR", "/env/features")
    assert str(vdata.DataPaths.resolve(str(vc_data)).images_dir) == "/env/images"
    assert str(vdata.DataPaths.resolve(str(vc_data), "/cli/img", "/cli/f").features_dir) == "/cli/f"
    with pytest.raises(InputError, match="annotation directory not found"):
        vdata.DataPaths.resolve(str(vc_data / "missing" / "dir") + "/")


def test_data_dir_without_trailing_slash_and_cache_keys(vc_data, vc_tokenizer, tmp_path):
    paths = vdata.DataPaths.resolve(str(vc_data))  # no trailing slash (pitfall 18)
    assert paths.data_dir == vc_data
    cache = tmp_path / "new" / "cache"  # created on demand (pitfall 19)
    lay1, d1 = vdata.build_finetune_data(paths, vc_tokenizer, 40, cache_dir=str(cache))
    lay2, _ = vdata.build_finetune_data(paths, vc_tokenizer, 40, cache_dir=str(cache),
                                        layout=vdata.Layout(9, 9, 9, 40))
    assert lay1 != lay2 and len(list(cache.iterdir())) == 2  # E/P/I are part of the key
    assert (lay1.max_event, lay1.max_place, lay1.max_inference) == vdata.segment_lengths(d1["train"][2], vc_tokenizer)
    gen1 = vdata.build_generation_data(paths, vc_tokenizer, lay1, "val", cache_dir=str(cache))
    gen2 = vdata.build_generation_data(paths, vc_tokenizer, vdata.Layout(9, 9, 9, 40), "val", cache_dir=str(cache))
    assert len(gen1[0][0]) == lay1.inference_start + 1 and len(gen2[0][0]) == 17 + 18 + 1
    assert len(gen1[1]) == 3 * 16


def test_dataset_item_and_collate(vc_data, vc_tokenizer, vc_paths):
    lay, d = vdata.build_finetune_data(vc_paths, vc_tokenizer, 40)
    ds = vdata.VCGDataset(d["val"][2], d["val"][0], d["val"][1], vc_tokenizer, vc_paths)
    batch = vdata.collate([ds[0], ds[5]])
    assert batch["input_ids"].shape == (2, 40) and batch["img_feats"].shape == (2, 15, 2048)
    assert batch["input_ids"].dtype == torch.long
    text_only = vdata.VCGDataset(d["val"][2], d["val"][0], d["val"][1], vc_tokenizer, vc_paths, include_image=False)
    assert "img_feats" not in text_only[0]
