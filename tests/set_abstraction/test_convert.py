"""convert.py: --check-keys on every key-file section, strict original-checkpoint loading, same outputs."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from common.errors import InputError, run_cli
from set_abstraction import convert
from set_abstraction.model import AbstractionEmbeddingModule


def test_check_keys_cli_every_section(fixtures_dir, capsys):
    key_file = fixtures_dir / "set_abstraction_state_dict_keys.txt"
    sections = convert.parse_key_file(key_file)
    assert set(sections) == {"moments", "kinetics"}
    assert sections["kinetics"]["module.last_linear.weight"] == (608, 2048)
    for dataset in sections:
        assert convert.main(["--check-keys", str(key_file), "--dataset", dataset]) == 0
        assert f"{dataset}: loaded 22/22 keys" in capsys.readouterr().out


def test_check_keys_fails_on_mismatch(tmp_path, fixtures_dir, capsys):
    text = (fixtures_dir / "set_abstraction_state_dict_keys.txt").read_text()
    bad = tmp_path / "keys.txt"
    bad.write_text(text.replace("module.linear.weight\t[1, 4]", "module.linear.weight\t[1, 5]")
                   .replace("module.embedding_linear.bias\t[300]\n", "module.extra.bias\t[3]\n"))
    with pytest.raises(SystemExit) as exc:
        run_cli(convert.main, ["--check-keys", str(bad), "--dataset", "moments"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "loaded 20/22 keys" in err and "module.extra.bias" not in err.split("unexpected")[0]
    assert "linear.weight" in err and "embedding_linear.bias" in err


def original_forward(sd: dict, x: torch.Tensor, scales=(1, 2, 3, 4)):
    """The original AbstractionEmbeddingModule.forward written against its own state-dict layout."""
    n = x.shape[1]
    raw, out = {}, []

    def relate(k, inp):
        h = F.linear(F.relu(inp), sd[f"module.relations.{k}.relate.1.weight"], sd[f"module.relations.{k}.relate.1.bias"])
        return F.linear(F.relu(h), sd[f"module.relations.{k}.relate.3.weight"], sd[f"module.relations.{k}.relate.3.bias"])

    for s in range(1, n + 1):
        for S in itertools.combinations(range(n), s):
            raw[S] = relate(scales.index(s), x[:, list(S)].flatten(1)).unsqueeze(1)
            out.append(sum(raw[T] for T in raw if set(T) <= set(S)))
    feats = torch.cat(out, dim=1)
    emb = F.linear(feats, sd["module.embedding_linear.weight"], sd["module.embedding_linear.bias"])
    logits = F.linear(feats, sd["module.last_linear.weight"], sd["module.last_linear.bias"]).transpose(-2, -1)
    return emb, logits


def tiny_original_checkpoint(tmp_path, seed=0):
    torch.manual_seed(seed)
    shapes = {}
    for k in range(4):
        shapes[f"module.relations.{k}.relate.1.weight"] = (6, (k + 1) * 16)
        shapes[f"module.relations.{k}.relate.1.bias"] = (6,)
        shapes[f"module.relations.{k}.relate.3.weight"] = (8, 6)
        shapes[f"module.relations.{k}.relate.3.bias"] = (8,)
    shapes.update({"module.linear.weight": (1, 4), "module.linear.bias": (1,), "module.last_linear.weight": (27, 8),
                   "module.last_linear.bias": (27,), "module.embedding_linear.weight": (300, 8),
                   "module.embedding_linear.bias": (300,)})
    sd = {k: torch.randn(s) for k, s in shapes.items()}
    path = tmp_path / "AbstractionEmbedding_moments_SAM_1-2-3-4_best.pth.tar"
    torch.save({"epoch": 12, "state_dict": sd, "optimizer": None, "best_acc1": 55.5}, path)
    return path, sd


def test_converted_checkpoint_gives_same_outputs(tmp_path):
    path, sd = tiny_original_checkpoint(tmp_path)
    model = AbstractionEmbeddingModule(16, 8, num_nodes=27, bottleneck_dim=6, scales=[1, 2, 3, 4])
    ckpt = convert.load_original_weights(model, path)
    assert list(ckpt) == ["epoch", "state_dict", "optimizer", "best_acc1"]
    x = torch.randn(3, 4, 16)
    emb, logits = model(x)
    ref_emb, ref_logits = original_forward(sd, x)
    torch.testing.assert_close(emb, ref_emb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    # round trip back to the original layout
    assert convert.to_original_state_dict(model.state_dict()).keys() == sd.keys()


def test_checkpoint_without_module_prefix_or_with_missing_keys(tmp_path):
    path, sd = tiny_original_checkpoint(tmp_path)
    model = AbstractionEmbeddingModule(16, 8, num_nodes=27, bottleneck_dim=6, scales=[1, 2, 3, 4])
    plain = tmp_path / "plain.pth.tar"
    torch.save({"epoch": 1, "state_dict": convert.convert_state_dict(sd), "best_acc1": 0.0}, plain)
    convert.load_original_weights(model, plain)  # the prefix is optional
    del sd["module.linear.weight"]
    torch.save({"epoch": 1, "state_dict": sd, "best_acc1": 0.0}, plain)
    with pytest.raises(InputError, match="linear.weight"):
        convert.load_original_weights(model, plain)
    torch.save({"state_dict": sd}, plain)
    with pytest.raises(InputError, match="epoch"):
        convert.load_original_weights(model, plain)


def test_convert_cli_writes_safetensors(tmp_path, capsys):
    path, _ = tiny_original_checkpoint(tmp_path)
    cfg_json = tmp_path / "m.json"
    cfg_json.write_text('{"in_features": 16, "out_features": 8, "num_nodes": 27, "embedding_dim": 300, '
                        '"bottleneck_dim": 6, "scales": [1, 2, 3, 4]}')
    out = tmp_path / "w.safetensors"
    assert convert.main(["--input", str(path), "--output", str(out), "--model_config", str(cfg_json)]) == 0
    assert out.is_file()
    with pytest.raises(InputError, match="already exists"):
        convert.main(["--input", str(path), "--output", str(out), "--model_config", str(cfg_json)])
