"""common.safe_pickle: data pickles load, anything that could run code is refused and nothing runs."""
from __future__ import annotations

import argparse
import os
import pickle
import stat
import subprocess
import sys
from collections import OrderedDict, defaultdict

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from common.checkpoint import CheckpointError, CheckpointManager, atomic_write_json, load_checkpoint_file
from common.safe_pickle import UnsafePickleError, add_trust_flag, load_pickle, torch_load


class _Marker:
    """Builds payloads that, if unpickled for real, create ``path``."""

    def __init__(self, path):
        self.path = str(path)


class _SystemGadget(_Marker):
    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class _EvalGadget(_Marker):
    def __reduce__(self):
        return (eval, (f"open({self.path!r}, 'w').close()",))


class _GetattrGadget(_Marker):
    def __reduce__(self):  # getattr(os, "system") style chains start with builtins.getattr
        return (getattr, ("text", "upper"))


class _NestedTorchGadget(_Marker):
    def __reduce__(self):
        import torch.storage
        return (torch.storage._load_from_bytes, (pickle.dumps(_SystemGadget(self.path)),))


class _NumpyGadget(_Marker):
    def __reduce__(self):  # a numpy global that is not an array rebuilder
        return (np.loadtxt, (self.path,))


GADGETS = {
    "os.system": (_SystemGadget, "os.system"),
    "builtins.eval": (_EvalGadget, "builtins.eval"),
    "builtins.getattr": (_GetattrGadget, "builtins.getattr"),
    "nested torch.load": (_NestedTorchGadget, "nested in it wants to call os.system"),
    "numpy.loadtxt": (_NumpyGadget, "numpy.loadtxt"),
}


@pytest.mark.parametrize("name", sorted(GADGETS))
@pytest.mark.parametrize("reader", ["load_pickle", "torch_load", "load_checkpoint_file"])
def test_gadgets_are_refused_and_nothing_runs(tmp_path, name, reader):
    cls, asked = GADGETS[name]
    marker = tmp_path / "pwned"
    payload = {"state_dict": {"w": torch.zeros(2)}, "x": [1, cls(marker)]}
    path = tmp_path / "evil.pth"
    if reader == "load_pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
        load = load_pickle
    else:
        torch.save(payload, path)
        load = torch_load if reader == "torch_load" else load_checkpoint_file
    with pytest.raises(UnsafePickleError) as err:
        load(path)
    message = str(err.value)
    assert message.startswith(str(path)) and asked in message and "--trust_checkpoint" in message
    assert "\n" not in message
    assert not marker.exists()


def test_trust_allows_full_unpickling(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps({"x": _SystemGadget(marker)}))
    load_pickle(path, trust=True)
    assert marker.exists()


def test_data_pickles_load_without_trust(tmp_path):
    cfg = OmegaConf.create({"optimizer": {"lr": 1e-4, "betas": [0.9, 0.999]}, "name": "ret", "none": None})
    payload = {
        "model": OrderedDict(w=torch.arange(6.0).view(2, 3)),
        "config": cfg,
        "args": argparse.Namespace(lr=0.1, layers=[1, 2]),
        "np": {"f": np.float32(1.5), "i": np.int64(7), "a": np.arange(4, dtype=np.float16)},
        "df": defaultdict(float, {("a", "b"): 2.0}),
        "misc": {1, 2}, "t": (1, "x", b"\x00", 2.5, None, True),
    }
    for path, write in ((tmp_path / "c.pth", lambda p: torch.save(payload, p)),
                        (tmp_path / "c.pkl", lambda p: p.write_bytes(pickle.dumps(payload, protocol=4)))):
        write(path)
        got = torch_load(path) if path.suffix == ".pth" else load_pickle(path)
        assert got["config"] == {"optimizer": {"lr": 1e-4, "betas": [0.9, 0.999]}, "name": "ret", "none": None}
        assert type(got["config"]) is dict and type(got["config"]["optimizer"]["betas"]) is list
        assert isinstance(got["args"], argparse.Namespace) and got["args"].layers == [1, 2]
        assert torch.equal(got["model"]["w"], payload["model"]["w"])
        assert got["np"]["f"] == np.float32(1.5) and got["np"]["i"].dtype == np.int64
        assert np.array_equal(got["np"]["a"], payload["np"]["a"]) and got["np"]["a"].dtype == np.float16
        assert got["df"][("a", "b")] == 2.0 and got["misc"] == {1, 2} and got["t"] == payload["t"]


def test_tensor_pickled_with_plain_pickle_loads(tmp_path):
    path = tmp_path / "infos.pkl"  # the originals' infos pickles hold tensors pickled this way
    path.write_bytes(pickle.dumps({"best": torch.tensor([1.0, 2.0])}))
    assert torch.equal(load_pickle(path)["best"], torch.tensor([1.0, 2.0]))


def test_python2_byte_strings_fall_back_to_latin1(tmp_path):
    path = tmp_path / "py2.pkl"
    # protocol 2, {'a': '\xe9'} as Python 2 wrote it: SHORT_BINSTRING, not unicode
    path.write_bytes(b"\x80\x02}q\x00U\x01aq\x01U\x01\xe9q\x02s.")
    assert load_pickle(path) == {"a": "\xe9"}


@pytest.mark.parametrize("content, expected", [
    (b"", "empty file"),
    (b"hello, this is a text file\n", "not a torch checkpoint"),
    (b"PK\x03\x04garbage", "truncated or corrupt torch zip"),
])
def test_unreadable_torch_files_get_one_line_without_trust_hint(tmp_path, content, expected):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    for trust in (False, True):
        with pytest.raises(CheckpointError) as err:
            load_checkpoint_file(path, trust=trust)
        assert expected in str(err.value) and "--trust_checkpoint" not in str(err.value)
        assert "\n" not in str(err.value)


def test_truncated_checkpoint_and_pickle(tmp_path):
    full = tmp_path / "full.pth"
    torch.save({"w": torch.randn(64, 64)}, full)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint_file(cut)
    pkl = tmp_path / "cut.pkl"
    pkl.write_bytes(pickle.dumps({"a": list(range(100))})[:40])
    with pytest.raises(CheckpointError, match="truncated"):
        load_pickle(pkl)
    st = tmp_path / "cut.safetensors"
    st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"w\":")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint_file(st)


def test_trust_flag_is_documented():
    parser = add_trust_flag(argparse.ArgumentParser())
    assert parser.parse_args(["--trust_checkpoint"]).trust_checkpoint is True
    assert "run code" in parser.format_help()


def test_written_files_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "metrics.json", {"a": 1})
        manager = CheckpointManager(tmp_path / "ckpt")
        step_dir = manager.save(model=torch.nn.Linear(2, 2), step=1)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644
    assert stat.S_IMODE(step_dir.stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "ckpt" / "latest").stat().st_mode) == 0o644
    for name in ("model.safetensors", "training_state.pt", "meta.json"):
        assert stat.S_IMODE((step_dir / name).stat().st_mode) == 0o644, name


def test_no_plain_unpickling_left_in_the_project():
    """Every pickle read goes through common.safe_pickle (its trusted branch is the only full load)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    patterns = ["pickle.load(", "pickle.loads(", "pickle.Unpickler", "weights_only=False", "allow_pickle=True"]
    out = subprocess.run(["git", "grep", "-n", "-F", *sum((["-e", p] for p in patterns), []), "--", "*.py"],
                         cwd=root, capture_output=True, text=True, check=False)
    offending = [line for line in out.stdout.splitlines()
                 if not line.startswith(("common/safe_pickle.py:", "tests/"))]
    assert not offending, "plain unpickling outside common/safe_pickle.py:\n" + "\n".join(offending)
    assert sys.version_info >= (3, 10)


class _ForeignReport:  # stands for a class whose code the reader does not have (ORT's ReportData)
    def __init__(self, score):
        self.score = score


def test_standins_replace_foreign_data_classes_in_both_modes(tmp_path):
    class Record:
        def __setstate__(self, state):
            self.__dict__.update(state)

    def standins(module, name):
        return Record if name == "_ForeignReport" else None

    path = tmp_path / "report.pkl"
    path.write_bytes(pickle.dumps({"r": _ForeignReport(0.5)}))
    with pytest.raises(UnsafePickleError, match="_ForeignReport"):
        load_pickle(path)
    for trust in (False, True):
        got = load_pickle(path, trust=trust, standins=standins)["r"]
        assert type(got) is Record and got.score == 0.5
