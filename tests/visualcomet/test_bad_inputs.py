"""Bad and malicious inputs to the VisualCOMET scripts (issue 11): one line, exit code 2, nothing run or overwritten.

Every case copies a small synthetic dataset (16-d features) with a random tiny model, breaks one file, runs a real
script entry point in-process through ``run_cli`` and checks: exit code 2; exactly one ``error:`` line, naming the
file (and the field where there is one); no traceback; every file already in the output directory unchanged and
none added; for crafted pickles, that the payload's marker file was not created.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import run_cli
from common.safe_pickle import load_pickle

GEN_OUT = "val_sample_1_num_2_top_k_0_top_p_0.9.json"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """Synthetic data (8/4/2 images, 16-d features) + ``model/``: a saved random tiny model with its tokenizer."""
    from visualcomet import synthetic
    from visualcomet.model import VisualCometLMHead, load_config, save_pretrained
    from visualcomet.tokenization import VisualCometTokenizer

    root = synthetic.generate(tmp_path_factory.mktemp("vc_bad"), seed=0, feature_dim=16,
                              sizes={"train": 8, "val": 4, "test": 2})
    tok = VisualCometTokenizer.from_pretrained(root / "gpt2-tiny")
    config = load_config(root / "gpt2-tiny")
    config.vocab_size, config.max_event, config.max_place, config.max_inference = len(tok), 9, 6, 10
    torch.manual_seed(0)
    model = VisualCometLMHead(config)
    save_pretrained(model, root / "model", tok)
    # the released (2.4.1) layout: the pickle reader is what these cases attack
    (root / "model" / "model.safetensors").unlink()
    torch.save(model.state_dict(), root / "model" / "pytorch_model.bin")
    return root


# ------------------------------------------------------------------------------------------------ crafted pickles
class _Call:
    """Pickles as a call of ``fn(*args)``: what a malicious file does on load."""

    def __init__(self, fn: Callable, args: tuple):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _os_system(marker: Path) -> _Call:
    return _Call(os.system, (f"touch {marker}",))


def _nested_torch_load(marker: Path) -> _Call:
    # torch.storage._load_from_bytes runs a full torch.load (hence pickle) on bytes the file chooses
    return _Call(torch.storage._load_from_bytes, (pickle.dumps(_os_system(marker)),))


def _numpy_global(marker: Path) -> _Call:
    from numpy.testing._private.utils import runstring  # exec()s its argument

    return _Call(runstring, (f"import os; os.system('touch {marker}')", {}))


PAYLOADS = {"os-system": _os_system, "nested-torch-load": _nested_torch_load, "numpy-global": _numpy_global}


def _write_pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _feature_files(root: Path) -> list[Path]:
    """Every feature pickle, first the one of the first train image (the first a training run reads)."""
    files = sorted((root / "features").glob("*.pkl"))
    return sorted(files, key=lambda f: not f.name.startswith("train_clip_000@"))


def _rewrite_features(root: Path, change: Callable[[dict], None]) -> Path:
    """Apply ``change`` to every feature pickle; returns their directory (the message names the first one read)."""
    for f in _feature_files(root):
        feats = load_pickle(f)
        change(feats)
        _write_pickle(f, feats)
    return root / "features"


def _cache_file(root: Path, kind: str) -> Path:
    """Build the dataset cache the script will look for (kind 'train' or 'generation') and return its path."""
    from visualcomet import data as vdata
    from visualcomet.generation import layout_from_config
    from visualcomet.model import load_config
    from visualcomet.tokenization import VisualCometTokenizer

    paths = vdata.DataPaths.resolve(str(root))
    if kind == "generation":
        tok = VisualCometTokenizer.from_pretrained(root / "model")
        vdata.build_generation_data(paths, tok, layout_from_config(load_config(root / "model"), 40), "val")
        return next(root.glob("cached_lm_*_generation_*"))
    tok = VisualCometTokenizer.from_pretrained(root / "gpt2-tiny")
    vdata.build_finetune_data(paths, tok, 40)
    return next(p for p in root.glob("cached_lm_*") if "_generation_" not in p.name)


# ------------------------------------------------------------------------------------------------ scripts
def _argv(script: str, root: Path) -> list[str]:
    out = root / "out"
    if script == "train":
        return ["--data_dir", str(root), "--model_name_or_path", str(root / "gpt2-tiny"), "--output_dir", str(out),
                "--overwrite_output_dir", "--max_seq_len", "40", "--per_gpu_train_batch_size", "4",
                "--per_gpu_eval_batch_size", "4", "--max_steps", "1", "--save_steps", "0", "--no_cuda"]
    common = ["--data_dir", str(root), "--model_name_or_path", str(root / "model"), "--split", "val",
              "--max_seq_len", "40", "--output_file", f"{out}/", "--overwrite_output", "--no_cuda"]
    if script == "gen":
        return common + ["--length", "3", "--num_samples", "2"]
    return common + ["--rank_mode", "random_3"]


def _main(script: str) -> Callable:
    from visualcomet.scripts import run_finetuning, run_generation, run_rank

    return {"train": run_finetuning.main, "gen": run_generation.main, "rank": run_rank.main}[script]


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ cases
def _features(**override):
    return lambda root: _rewrite_features(root, lambda feats: feats.update(override))


def _nan_objects(root: Path) -> Path:
    return _rewrite_features(root, lambda feats: feats["object_features"].__setitem__((2, 5), np.nan))


def _truncated_bin(root: Path) -> Path:
    f = root / "model" / "pytorch_model.bin"
    f.write_bytes(f.read_bytes()[:2000])
    return f


def _text_bin(root: Path) -> Path:
    f = root / "model" / "pytorch_model.bin"
    f.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
    return f


def _state(root: Path, change: Callable[[dict], None]) -> Path:
    f = root / "model" / "pytorch_model.bin"
    state = torch.load(f, weights_only=True)
    change(state)
    torch.save(state, f)
    return f


def _plain_gpt2_bin(root: Path) -> Path:
    return _state(root, lambda s: [s.pop(k) for k in list(s) if k.startswith(("transformer.detector.",
                                                                               "transformer.subject_embed."))])


def _missing_key_bin(root: Path) -> Path:
    return _state(root, lambda s: s.pop("transformer.h.1.mlp.c_fc.weight"))


def _empty_annots(split: str):
    def mutate(root: Path) -> Path:
        f = root / f"{split}_annots.json"
        f.write_text("[]")
        return f
    return mutate


def _garbage_cache(kind: str):
    def mutate(root: Path) -> Path:
        f = _cache_file(root, kind)
        _write_pickle(f, {"data": {"val": ([[1, 2]], "not records")}})
        return f
    return mutate


def _malicious(where: str, payload: str):
    def mutate(root: Path) -> Path:
        marker = root / "pwned"
        obj = PAYLOADS[payload](marker)
        if where == "features":
            f = _feature_files(root)[0]
            _write_pickle(f, obj)
        elif where == "cache":
            f = _cache_file(root, "generation")
            _write_pickle(f, obj)
        else:
            f = root / "model" / "pytorch_model.bin"
            torch.save(obj, f)
        return f
    return mutate


# (id, script, mutate -> the broken file, substrings the message must contain besides the file name)
CASES = [
    ("feature-width-differs-from-model", "gen", _features(image_features=np.zeros(8, np.float32),
                                                          object_features=np.zeros((8, 8), np.float32)),
     [".pkl: field 'image_features'", "model expects 16"]),
    ("feature-width-train", "train", _features(image_features=np.zeros(32, np.float32),
                                               object_features=np.zeros((8, 32), np.float32)),
     [".pkl: field 'image_features'", "model expects 16"]),
    ("feature-width-rank", "rank", _features(image_features=np.zeros(8, np.float32),
                                             object_features=np.zeros((8, 8), np.float32)),
     [".pkl: field 'image_features'", "model expects 16"]),
    ("nan-features", "train", _nan_objects, [".pkl: field 'object_features'", "non-finite"]),
    ("integer-features", "train", _features(image_features=np.ones(16, np.int64)),
     [".pkl: field 'image_features'", "dtype int64"]),
    ("feature-rows-vs-metadata", "train", _features(object_features=np.zeros((3, 16), np.float32)),
     [".pkl: field 'object_features'", "metadata objects"]),
    ("empty-feature-dict", "train", _features(image_features=np.zeros((0,), np.float32)),
     [".pkl: field 'image_features'", "D > 0"]),
    ("truncated-pytorch-model-bin", "gen", _truncated_bin, ["truncated"]),
    ("text-file-as-pytorch-model-bin", "gen", _text_bin, ["not a torch checkpoint"]),
    ("plain-gpt2-checkpoint-for-generation", "gen", _plain_gpt2_bin, ["field 'transformer.detector'"]),
    ("missing-checkpoint-key", "gen", _missing_key_bin, ["transformer.h.1.mlp.c_fc.weight"]),
    ("empty-train-annotations", "train", _empty_annots("train"), ["no inference sentences"]),
    ("empty-val-annotations-generation", "gen", _empty_annots("val"), ["no annotations"]),
    ("empty-val-annotations-rank", "rank", _empty_annots("val"), ["no inference sentences"]),
    ("garbage-generation-cache", "gen", _garbage_cache("generation"), ["--overwrite_cache"]),
    ("garbage-train-cache", "train", _garbage_cache("train"), ["--overwrite_cache"]),
] + [(f"malicious-{where}-{payload}", script, _malicious(where, payload), ["refused to unpickle", "wants to call"])
     for where, script in (("features", "train"), ("cache", "gen"), ("pytorch-model-bin", "gen"))
     for payload in PAYLOADS]


@pytest.mark.parametrize("script, mutate, expected", [pytest.param(s, m, e, id=i) for i, s, m, e in CASES])
def test_bad_input_one_line_exit_2_outputs_untouched(base, tmp_path, capsys, monkeypatch, script, mutate, expected):
    # training's logger keeps the stderr of the test that created it; let it bind to this test's capture
    monkeypatch.setattr(logging.getLogger("visualcomet.train"), "handlers", [])
    root = Path(shutil.copytree(base, tmp_path / "data"))
    out = root / "out"
    out.mkdir()
    (out / GEN_OUT).write_text('["generations of an earlier run"]')
    (out / "val_rank_random_3.json").write_text('{"mean_recall": 0.5}')
    (out / "metrics.json").write_text('{"perplexity_inference": 12.5}')
    before = _snapshot(out)
    broken = mutate(root)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(_main(script), _argv(script, root))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert str(broken) in lines[0] and all(e in lines[0] for e in expected), lines[0]
    assert not (root / "pwned").exists(), "the crafted pickle ran its payload"
    assert _snapshot(out) == before


def test_failed_launch_leaves_no_output_dir(base, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(logging.getLogger("visualcomet.train"), "handlers", [])
    root = Path(shutil.copytree(base, tmp_path / "data"))
    _nan_objects(root)
    argv = _argv("train", root)
    argv[argv.index("--output_dir") + 1] = str(tmp_path / "fresh" / "run")
    with pytest.raises(SystemExit):
        run_cli(_main("train"), argv)
    assert "non-finite" in capsys.readouterr().err
    assert not (tmp_path / "fresh").exists()


def test_trust_checkpoint_reads_a_pickle_the_allow_list_refuses(tmp_path):
    """--trust_checkpoint opens full unpickling: a feature dict built through a non-allow-listed call loads."""
    import copy

    from common.safe_pickle import UnsafePickleError
    from visualcomet import data as vdata

    f = tmp_path / "x.pkl"
    _write_pickle(f, _Call(copy.deepcopy, ({"image_features": np.ones(4, np.float32),
                                            "object_features": np.ones((2, 4), np.float32)},)))
    with pytest.raises(UnsafePickleError, match="copy.deepcopy"):
        vdata.load_features(str(f))
    img, objs = vdata.load_features(str(f), trust=True)
    assert img.shape == (4,) and objs.shape == (2, 4)


def test_allow_partial_checkpoint_loads_and_logs_the_missing_key(base, tmp_path, caplog):
    root = Path(shutil.copytree(base, tmp_path / "data"))
    _missing_key_bin(root)
    with caplog.at_level(logging.WARNING, logger="visualcomet.model"):
        run_cli(_main("gen"), _argv("gen", root) + ["--allow_partial_checkpoint"])
    assert "1 missing" in caplog.text and "transformer.h.1.mlp.c_fc.weight" in caplog.text
    assert len(json.loads((root / "out" / GEN_OUT).read_text())) == 12  # 4 val annotations x 3 relations
