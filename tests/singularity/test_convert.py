"""convert.py: every key-file section, forward equivalence, task conversions, strict loading (spec 6, 9.1/9.2/9.20)."""
import re

import pytest
import torch

from common.errors import InputError
from singularity import convert
from singularity.tasks_common import apply_inferred_architecture, load_pretrained

KEY_FILE = convert.DEFAULT_KEY_FILE


def test_check_keys_every_section(capsys):
    assert convert.main(["--check-keys", str(KEY_FILE)]) == 0
    out = capsys.readouterr().out
    for name, n in [("pretrain_1frm", 465), ("ret_msrvtt_1frm", 458), ("ret_msrvtt_temporal_4frm_2layer", 490),
                    ("pretrain_temporal_4frm_2layer", 497), ("qa_msrvtt_1frm", 539)]:
        assert f"{name}: loaded {n}/{n} keys" in out


def test_check_keys_fails_on_a_broken_file(tmp_path, capsys):
    text = KEY_FILE.read_text().split("# SECTION ret_msrvtt_1frm")[0]
    broken = tmp_path / "keys.txt"
    broken.write_text(text.replace("itm_head.weight\t(2, 768)", "itm_head.weight\t(3, 768)"))
    assert convert.main(["--check-keys", str(broken)]) == 1
    assert "shape-mismatched" in capsys.readouterr().out


def to_original_layout(state_dict: dict, pretrain: bool) -> dict:
    """Our keys -> transformers 4.15 BEiT / xbert keys, written independently of convert.py."""
    out = {}
    inverse = [("attention.q_proj.", "attention.attention.query."), ("attention.k_proj.", "attention.attention.key."),
               ("attention.v_proj.", "attention.attention.value."), ("attention.o_proj.", "attention.output.dense."),
               ("relative_position_bias.", "attention.attention.relative_position_bias."),
               ("mlp.fc1.", "intermediate.dense."), ("mlp.fc2.", "output.dense.")]
    for key, value in state_dict.items():
        m = re.match(r"vision_encoder\.layers\.(\d+)\.(.*)", key)
        if m:
            rest = m.group(2)
            for new, old in inverse:
                if rest.startswith(new):
                    rest = old + rest[len(new):]
            key = f"vision_encoder.encoder.layer.{m.group(1)}.{rest}"
        out[key] = value.clone()
        if key.endswith("relative_position_bias_table"):
            out[key.replace("relative_position_bias_table", "relative_position_index")] = torch.zeros(17, 17, dtype=torch.long)
    return out


def test_tiny_original_layout_gives_same_outputs(tiny_model_factory):
    src = tiny_model_factory("retrieval", seed=1).eval()
    dst = tiny_model_factory("retrieval", seed=2).eval()
    original = to_original_layout(src.state_dict(), pretrain=False)
    assert any("attention.attention.query" in k for k in original)
    report = load_pretrained(dst, original)
    assert report.ok
    img = torch.randn(2, 3, 3, 32, 32)
    text = {"input_ids": torch.randint(5, 30, (2, 6)), "attention_mask": torch.ones(2, 6, dtype=torch.long)}
    with torch.no_grad():
        a_tok, a_pool = src.encode_image(img)
        b_tok, b_pool = dst.encode_image(img)
        a_txt, _ = src.encode_text(text)
        b_txt, _ = dst.encode_text(text)
        a_itm = src.itm_logits(a_txt, text["attention_mask"], a_tok)
        b_itm = dst.itm_logits(b_txt, text["attention_mask"], b_tok)
    assert torch.equal(a_tok, b_tok) and torch.equal(a_pool, b_pool) and torch.equal(a_itm, b_itm)


def test_pretrain_to_retrieval_and_qa(tiny_model_factory):
    pt = tiny_model_factory("pretrain", seed=3)
    original = to_original_layout(pt.state_dict(), pretrain=True)
    assert any(k.startswith("text_encoder.bert.") for k in original)
    ret = tiny_model_factory("retrieval", seed=4)
    assert load_pretrained(ret, original).ok  # bert. stripped and cls dropped in every mode (9.1 F)
    assert torch.equal(ret.text_encoder.encoder.layer[1].attention.self.query.weight,
                       pt.text_encoder.bert.encoder.layer[1].attention.self.query.weight)
    qa = tiny_model_factory("vqa", seed=5)
    assert load_pretrained(qa, original).ok
    # decoder layer N - fusion_layer <- text layer N >= fusion_layer (tiny fusion_layer = 2)
    assert torch.equal(qa.text_decoder.bert.encoder.layer[0].crossattention.self.key.weight,
                       pt.text_encoder.bert.encoder.layer[2].crossattention.self.key.weight)
    assert torch.equal(qa.text_decoder.cls.predictions.transform.dense.weight,
                       pt.text_encoder.cls.predictions.transform.dense.weight)


def test_missing_keys_fail_unless_allow_partial(tiny_model_factory, caplog):
    one_frame = tiny_model_factory("retrieval", seed=6).state_dict()
    temporal = tiny_model_factory("retrieval", seed=7, add_temporal_embed=True, video_input={"num_frames": 4},
                                  temporal_vision_encoder={"enable": True, "num_layers": 1})
    with pytest.raises(InputError, match="missing.*allow_partial"):
        load_pretrained(temporal, one_frame)
    with caplog.at_level("WARNING", logger="singularity"):
        report = load_pretrained(temporal, one_frame, allow_partial=True)
    assert report.missing and all(k.startswith("temporal_vision_encoder.") for k in report.missing)
    assert "initialised fresh" in caplog.text
    # temporal embeddings zero-padded 1 -> 4 frames (spec 4.5)
    assert torch.equal(temporal.temporal_embeddings[:, :1], one_frame["temporal_embeddings"])
    assert not temporal.temporal_embeddings[:, 1:].any()
    truncated = convert.resize_temporal(torch.arange(4.0).view(1, 4, 1, 1), 2)
    assert truncated.flatten().tolist() == [0.0, 1.0]


def test_architecture_inferred_from_temporal_keys(tiny_model_factory):
    from omegaconf import OmegaConf

    temporal = tiny_model_factory("retrieval", seed=8, add_temporal_embed=True, video_input={"num_frames": 4},
                                  temporal_vision_encoder={"enable": True, "num_layers": 1}).state_dict()
    cfg = OmegaConf.create({"add_temporal_embed": False, "video_input": {"num_frames": 1},
                            "temporal_vision_encoder": {"enable": False, "num_layers": 2}})
    changed = apply_inferred_architecture(cfg, temporal)
    # the frame count follows the checkpoint's temporal_embeddings (spec section 8 / pitfall 9.2 F)
    assert changed == {"temporal_vision_encoder.enable": True, "temporal_vision_encoder.num_layers": 1,
                       "add_temporal_embed": True, "video_input.num_frames": 4}


def test_relative_position_table_and_temporal_interpolation(tiny_model_factory):
    from singularity.models.vision import resize_temporal_embeddings

    small = tiny_model_factory("retrieval", seed=9)  # 32 px / patch 8 -> 4x4 grid, 7*7+3 = 52 rows
    big = tiny_model_factory("retrieval", seed=10, image_res=48)  # 6x6 grid -> 11*11+3 = 124 rows
    with pytest.raises(InputError, match="resize_learned_tables=True"):
        load_pretrained(big, small.state_dict())  # another image_res: resampling is an explicit decision
    report = load_pretrained(big, small.state_dict(), resize_tables=True)
    assert report.ok and len(report.resized) == 2  # one table per tiny BEiT layer, named in the log
    table = big.vision_encoder.layers[0].relative_position_bias.relative_position_bias_table
    src = small.vision_encoder.layers[0].relative_position_bias.relative_position_bias_table
    assert table.shape == (124, 4) and torch.equal(table[-3:], src[-3:])
    emb = torch.arange(4.0).view(1, 4, 1, 1)
    assert resize_temporal_embeddings(emb, 2).flatten().tolist() == [0.0, 1.0]
    up = resize_temporal_embeddings(emb, 8).flatten()
    assert up.shape == (8,) and up[0] == 0.0 and up[-1] == 3.0 and torch.all(up[1:] >= up[:-1])
