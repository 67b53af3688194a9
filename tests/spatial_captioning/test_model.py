"""Model layout (spec 6.3, 10.3), convert.py, masks and decoding invariants."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spatial_captioning.convert import check_keys, convert_state_dict, infer_config, read_key_file
from spatial_captioning.models import build_on_meta, load_config, setup
from spatial_captioning.models.attention import XLinearMultiHeadedAttention
from spatial_captioning.models.relation_transformer import LayerNorm, box_relational_embedding
from spatial_captioning.models.transformer import TransformerModel

KEY_FILE = Path(__file__).resolve().parents[1] / "fixtures" / "spatial_captioning_state_dict_keys.txt"


def tiny(**kw):
    return setup(load_config("tiny", vocab_size=20, **kw))


def test_default_config_has_exactly_the_354_original_keys_in_order():
    model = build_on_meta(load_config("spatial_pe"))
    sd = model.state_dict()
    expected = read_key_file(KEY_FILE)
    assert len(sd) == len(expected) == 354
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == expected
    assert sum(p.numel() for p in model.parameters()) == 56_794_390


@pytest.mark.parametrize("overrides, added, removed", [
    ({"enc_pos_type": "g2"}, {"model.src_embed.fc.weight": (512, 144), "model.src_embed.fc.bias": (512,)},
     ["model.src_embed.rows", "model.src_embed.fc1.weight", "model.src_embed.fc3.bias"]),
    ({"enc_pos_type": "box-coord"}, {"model.src_embed.fc.0.weight": (256, 4), "model.src_embed.fc.2.weight": (512, 256)},
     ["model.src_embed.fc2.weight"]),
    ({"enc_pos_embedding": False}, {"model.src_embed.pe1": (12, 512), "model.src_embed.pe2": (12, 512)},
     ["model.src_embed.fc1.weight"]),
    ({"use_grid": False, "caption_model": "transformer"}, {}, ["model.src_embed.rows", "model.src_embed.fc3.weight"]),
    ({"cross_attn": "dot-product"}, {"model.decoder.layers.0.cross_attn.linears.0.weight": (512, 512)},
     ["model.decoder.layers.0.cross_attn.attention.spatial.weight"]),
    ({"norm": "RMS"}, {"model.encoder.norm.scale": (512,)}, ["model.encoder.norm.weight", "model.encoder.norm.bias"]),
])
def test_variants_change_keys_as_the_key_file_header_says(overrides, added, removed, tmp_path):
    sd = build_on_meta(load_config("spatial_pe", **overrides)).state_dict()
    for key, shape in added.items():
        assert tuple(sd[key].shape) == shape
    for key in removed:
        assert key not in sd
    # the variant's own layout passes --check-keys too (infer_config reads the variant back from the keys)
    path = tmp_path / "keys.txt"
    path.write_text("\n".join(f"{k}\t{list(v.shape)}" for k, v in sd.items()))
    assert check_keys(path, verbose=False) == 0


def test_check_keys_cli_loads_all_354_keys():
    out = subprocess.run([sys.executable, "-m", "spatial_captioning.convert", "--check-keys", str(KEY_FILE)],
                         capture_output=True, text=True, check=True)
    assert "loaded 354/354 keys" in out.stdout


def test_check_keys_fails_on_a_missing_and_a_misshaped_key(tmp_path):
    lines = KEY_FILE.read_text().splitlines()
    body = [line for line in lines if line and not line.startswith("#")]
    broken = tmp_path / "broken.txt"
    broken.write_text("\n".join(body[1:]))  # drop att_embed.0.weight
    assert check_keys(broken, verbose=False) == 1
    bad_shape = tmp_path / "shape.txt"
    bad_shape.write_text("\n".join([body[0], body[1].replace("[512]", "[511]"), *body[2:]]))
    assert check_keys(bad_shape, verbose=False) == 1


def test_ort_layout_has_358_keys_and_checks():
    model = build_on_meta(load_config("relation_transformer"))
    sd = model.state_dict()
    assert len(sd) == 358 and sum(p.numel() for p in model.parameters()) == 54_917_952
    assert tuple(sd["model.encoder.layers.0.self_attn.WGs.0.weight"].shape) == (1, 64)
    assert "model.tgt_embed.0.lut.weight" in sd and "model.decoder.layers.0.src_attn.linears.0.weight" in sd
    assert infer_config({k: tuple(v.shape) for k, v in sd.items()}).caption_model == "ort"


def test_converted_original_layout_state_dict_gives_identical_outputs():
    torch.manual_seed(0)
    src = tiny().eval()
    original = {"model": {"module." + k: v.clone() for k, v in src.state_dict().items()}}  # DataParallel-style file
    dst = tiny().eval()
    dst.load_state_dict(convert_state_dict(original), strict=True)
    feats, boxes = torch.randn(2, 5, 32), torch.rand(2, 5, 36)
    labels = torch.randint(1, 21, (2, 12))
    labels[:, 0] = 0
    assert torch.equal(src(feats, labels, None, boxes), dst(feats, labels, None, boxes))


def test_target_mask_is_causal_and_hides_padding():
    mask = TransformerModel.target_mask(torch.tensor([[0, 5, 7, 0, 0]]))[0]
    expected = torch.tril(torch.ones(5, 5, dtype=torch.bool))
    expected[:, 3:] = False
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("cross", ["xlinear", "dot-product"])
def test_padded_regions_never_change_valid_outputs(cross):
    torch.manual_seed(0)
    model = tiny(cross_attn=cross).eval()
    feats, boxes = torch.randn(2, 6, 32), torch.rand(2, 6, 36)
    masks = torch.ones(2, 6)
    masks[0, 4:] = 0
    feats[1] = torch.randn(6, 32)
    labels = torch.randint(1, 21, (2, 12))
    labels[:, 0] = 0
    out1 = model(feats, labels, masks, boxes)
    feats2, boxes2 = feats.clone(), boxes.clone()
    feats2[0, 4:] = 100 * torch.randn(2, 32)
    boxes2[0, 4:] = torch.rand(2, 36)
    assert torch.allclose(out1, model(feats2, labels, masks, boxes2), atol=1e-6)


def test_xlinear_has_one_head_and_layer_norm_like_group_norm():
    model = build_on_meta(load_config("spatial_pe"))
    cross = model.model.decoder.layers[0].cross_attn
    assert isinstance(cross, XLinearMultiHeadedAttention) and cross.h == 1 and cross.d_k == 512
    gn = XLinearMultiHeadedAttention(1, 16, 0.0).linears[0][2]
    x = torch.randn(3, 4, 16)
    ln = torch.nn.functional.layer_norm(x, (16,), eps=gn.eps)
    assert torch.allclose(gn(x), ln, atol=1e-5)


def test_every_dropout_uses_the_dropout_flag():
    model = tiny(dropout=0.37)
    ps = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
    assert ps == {0.37}


def test_spatial_pe_implies_use_grid():
    cfg = load_config("tiny", vocab_size=20, use_grid=False)
    assert setup(cfg).use_grid is True


def test_ort_layernorm_uses_unbiased_std_and_box_embedding_runs_on_cpu():
    ln = LayerNorm(4)
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert torch.allclose(ln(x), (x - 2.5) / (x.std(-1, keepdim=True) + 1e-6))
    emb = box_relational_embedding(torch.rand(2, 3, 4).sort(-1).values)
    assert emb.shape == (2, 3, 3, 64) and emb.device.type == "cpu"


@pytest.mark.parametrize("name", ["ort", "show_tell", "transformer"])
def test_other_models_train_and_decode(name):
    torch.manual_seed(0)
    cfg = load_config("tiny", vocab_size=20, caption_model=name, use_grid=name != "transformer")
    cfg.use_grid = False
    cfg.heads = 8 if name == "ort" else cfg.heads
    model = setup(cfg)
    feats = torch.randn(3, 5, 32) if name != "show_tell" else torch.randn(3, 32)
    boxes = torch.rand(3, 5, 4).sort(-1).values if name == "ort" else None
    labels = torch.randint(1, 21, (3, 12))
    labels[:, 0] = 0
    out = model(feats, labels, None, boxes)
    assert out.shape == (3, 11, 21)
    out.mean().backward()
    model.eval()
    for opt in ({"sample_max": 1}, {"sample_max": 0, "temperature": 0.7}, {"beam_size": 3}):
        seq, lp = model(feats, None, boxes, opt=opt, mode="sample")
        assert seq.shape == (3, 10)


def test_beam_search_penalises_unk_only_when_present_and_supports_groups():
    torch.manual_seed(0)
    model = tiny().eval()
    feats, boxes = torch.randn(2, 5, 32), torch.rand(2, 5, 36)
    # bias the generator towards the last index: beam search must avoid it when it is UNK
    with torch.no_grad():
        model.model.generator.proj.bias[-1] = 50.0
    model.unk_index = 20
    seq, _ = model(feats, None, boxes, opt={"beam_size": 2}, mode="sample")
    assert not (seq == 20).any()
    greedy, _ = model(feats, None, boxes, opt={"sample_max": 1}, mode="sample")
    assert (greedy == 20).any()  # greedy does not suppress UNK (spec 9.12)
    model.unk_index = None
    seq, _ = model(feats, None, boxes, opt={"beam_size": 2}, mode="sample")
    assert (seq == 20).any()
    seq, _ = model(feats, None, boxes, opt={"beam_size": 4, "group_size": 2, "diversity_lambda": 0.5}, mode="sample")
    assert len(model.done_beams[0]) == 4 and seq.shape == (2, 10)
