"""Reading pickles that other people made, without letting them run code.

A pickle is a small program: every ``GLOBAL`` it names can be called with arguments the file chooses
(``os.system``, ``builtins.eval``, ``torch.storage._load_from_bytes`` which unpickles nested bytes
with full pickle, numpy helpers that evaluate strings, ...). The papers' released files (feature
pickles, ``infos_*.pkl``, CIDEr-D document frequencies, ``.pth``/``.bin`` checkpoints, detectron2
``model_final_*.pkl``) only need containers, numbers, strings, numpy arrays and torch tensors, plus
two kinds of objects that are data in disguise:

* ``argparse.Namespace`` (run options saved beside weights): rebuilt as a real Namespace, whose
  construction runs nothing but attribute assignment;
* OmegaConf ``DictConfig``/``ListConfig`` (Singularity's saved ``config``): never imported; their
  pickled state is recorded by inert stand-ins and turned into plain ``dict``/``list`` values.

Everything else is refused with an ``UnsafePickleError`` naming what the file asked for. Full
unpickling happens only when the caller passes ``trust=True`` (scripts: ``--trust_checkpoint``).
"""
from __future__ import annotations

import _compat_pickle
import argparse
import collections
import datetime
import io
import pickle
import zipfile
from pathlib import Path
from collections.abc import Callable
from typing import IO, Any

import numpy as np
import torch

from common.errors import InputError

TRUST_FLAG = "--trust_checkpoint"


class CheckpointError(InputError):
    """A checkpoint or pickle file that cannot be read, is not trusted, or does not fit the model."""


class UnsafePickleError(CheckpointError):
    """A pickle that asks for something a data file never needs (a callable that can run code)."""


class CheckpointReadError(CheckpointError):
    """A file that is not a readable pickle / torch checkpoint (truncated, text, garbage)."""


# --------------------------------------------------------------------------------------------
# What a data pickle may name
# --------------------------------------------------------------------------------------------

_NESTED = "<nested pickle>"


def _safe_nested_torch_load(data: bytes) -> Any:
    """Stand-in for ``torch.storage._load_from_bytes``: the nested bytes get the same allow-list."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False,
                      pickle_module=_restricted_module(_NESTED))


_BUILTIN_TYPES = ("dict", "list", "tuple", "set", "frozenset", "bytes", "bytearray", "str", "int",
                  "float", "complex", "bool", "slice", "range", "object")

_EXTRA_ALLOWED: dict[str, Any] = {
    **{f"builtins.{name}": getattr(__import__("builtins"), name) for name in _BUILTIN_TYPES},
    "collections.OrderedDict": collections.OrderedDict,
    "collections.defaultdict": collections.defaultdict,
    "collections.Counter": collections.Counter,
    "collections.deque": collections.deque,
    "_codecs.encode": __import__("_codecs").encode,
    "copyreg._reconstructor": __import__("copyreg")._reconstructor,
    "argparse.Namespace": argparse.Namespace,
    "datetime.datetime": datetime.datetime,
    "datetime.date": datetime.date,
    "datetime.timedelta": datetime.timedelta,
    "pathlib.PosixPath": Path,
    "pathlib.WindowsPath": Path,
    "pathlib.Path": Path,
    "numpy.ndarray": np.ndarray,
    "numpy.dtype": np.dtype,
    "torch.storage._load_from_bytes": _safe_nested_torch_load,
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _EXTRA_ALLOWED[f"{_mod}._reconstruct"] = np._core.multiarray._reconstruct
    _EXTRA_ALLOWED[f"{_mod}.scalar"] = np._core.multiarray.scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _EXTRA_ALLOWED[f"{_mod}._frombuffer"] = np._core.numeric._frombuffer
for _name in dir(np.dtypes):  # numpy 2 pickles some dtypes by their DType class
    if _name.endswith("DType"):
        _EXTRA_ALLOWED[f"numpy.dtypes.{_name}"] = getattr(np.dtypes, _name)


def _torch_allowed() -> dict[str, Any]:
    """torch's own weights-only allow-list: tensor/storage rebuilders and dtypes."""
    from torch import _weights_only_unpickler
    return dict(_weights_only_unpickler._get_allowed_globals())


_ALLOWED: dict[str, Any] | None = None


def allowed_globals() -> dict[str, Any]:
    """The ``module.name`` -> object table a restricted unpickle may resolve."""
    global _ALLOWED
    if _ALLOWED is None:
        _ALLOWED = {**_torch_allowed(), **_EXTRA_ALLOWED}
    return _ALLOWED


class _Recorded:
    """An inert stand-in for a data-only class (OmegaConf): keeps its constructor args and state."""

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any):
        obj = object.__new__(cls)
        obj.args, obj.state = args, None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args: Any, **kwargs: Any) -> None:  # typing.Any etc. are only referenced
        return None


_STANDINS: dict[str, type] = {}


def _standin(qualname: str) -> type:
    if qualname not in _STANDINS:
        _STANDINS[qualname] = type(qualname.rsplit(".", 1)[-1], (_Recorded,), {"qualname": qualname})
    return _STANDINS[qualname]


def _is_data_standin(module: str, name: str) -> bool:
    return module == "omegaconf" or module.startswith("omegaconf.") or (module, name) == ("typing", "Any")


def _plain(obj: Any, memo: dict[int, Any] | None = None) -> Any:
    """Replace recorded OmegaConf stand-ins by the plain dict/list/value they hold, recursively."""
    memo = {} if memo is None else memo
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, _Recorded):
        state = obj.state if isinstance(obj.state, dict) else {}
        name = type(obj).qualname
        if name.endswith("DictConfig"):
            content = state.get("_content")
            out: Any = {} if isinstance(content, dict) else _plain(content, memo)
            memo[key] = out
            if isinstance(content, dict):
                out.update({k: _plain(v, memo) for k, v in content.items()})
            return out
        if name.endswith("ListConfig"):
            content = state.get("_content")
            out = [] if isinstance(content, list) else _plain(content, memo)
            memo[key] = out
            if isinstance(content, list):
                out.extend(_plain(v, memo) for v in content)
            return out
        if "_val" in state:
            memo[key] = _plain(state["_val"], memo)
            return memo[key]
        memo[key] = None  # metadata objects (types, flags) carry no user data
        return None
    if isinstance(obj, dict) and not isinstance(obj, collections.defaultdict):
        # OrderedDict keeps its type; plain dicts are rebuilt in place so tensors are untouched
        if any(isinstance(v, (_Recorded, dict, list, tuple, argparse.Namespace)) for v in obj.values()):
            for k in list(obj):
                obj[k] = _plain(obj[k], memo)
        return obj
    if isinstance(obj, list):
        for i, v in enumerate(obj):
            obj[i] = _plain(v, memo)
        return obj
    if isinstance(obj, tuple):
        return type(obj)(*(_plain(v, memo) for v in obj)) if hasattr(obj, "_fields") else \
            tuple(_plain(v, memo) for v in obj)
    if isinstance(obj, argparse.Namespace):
        for k, v in vars(obj).items():
            setattr(obj, k, _plain(v, memo))
        return obj
    return obj


def _refusal(module: str, name: str) -> str:
    qual = f"{'os' if module in ('posix', 'nt') else module}.{name}"
    verb = "wants to call" if not name[:1].isupper() else "wants to build a"
    return (f"refused to unpickle: it {verb} {qual}, which a data file never needs and which can run "
            f"code; pass {TRUST_FLAG} only if you trust the file's origin")


Standins = Callable[[str, str], Any]
"""``(module, name) -> replacement or None``: a reader's own inert stand-ins for foreign data classes."""


class _TrustedUnpickler(pickle.Unpickler):
    """Full unpickling (``trust``), still honouring a reader's stand-ins for absent foreign classes."""

    standins: Standins | None = None

    def find_class(self, module: str, name: str) -> Any:
        if self.standins is not None:
            found = self.standins(module, name)
            if found is not None:
                return found
        return super().find_class(module, name)


class RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that resolves only allow-listed globals (see the module docstring)."""

    source = "<pickle>"
    standins: Standins | None = None

    def find_class(self, module: str, name: str) -> Any:
        if self.standins is not None:
            found = self.standins(module, name)
            if found is not None:
                return found
        # Python-2 names (protocol < 3 pickles, torch.save's protocol 2): as pickle's own find_class
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        qual = f"{module}.{name}"
        table = allowed_globals()
        if qual in table:
            return table[qual]
        if _is_data_standin(module, name):
            return _standin(qual)
        raise UnsafePickleError(self.source, _refusal(module, name))


def _restricted_module(source: str) -> Any:
    """An object with ``Unpickler`` and ``load`` for ``torch.load(pickle_module=...)``."""

    class _Unpickler(RestrictedUnpickler):
        pass

    _Unpickler.source = source

    class _Module:
        __name__ = "common.safe_pickle"
        Unpickler = _Unpickler

        @staticmethod
        def load(file: IO[bytes], **kwargs: Any) -> Any:
            return _Unpickler(file, **kwargs).load()

    return _Module


def _reraise_nested(source: str, err: CheckpointError) -> CheckpointError:
    """Name the outer file for an error raised while reading a pickle nested inside it."""
    if err.file == _NESTED:
        return type(err)(source, err.message.replace("it wants", "a pickle nested in it wants"))
    return err


def _decode_error(source: str, err: BaseException) -> CheckpointReadError:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = text.split(". ")[0][:200]
    if isinstance(err, EOFError) or "truncated" in text or "Ran out of input" in text:
        return CheckpointReadError(source, f"truncated or empty pickle ({text})")
    return CheckpointReadError(source, f"not a pickle file ({type(err).__name__}: {text})")


# --------------------------------------------------------------------------------------------
# Plain pickle files
# --------------------------------------------------------------------------------------------

def restricted_load(file: IO[bytes], *, source: str | Path = "<pickle>", trust: bool = False,
                    encoding: str | None = None, standins: Standins | None = None) -> Any:
    """Unpickle an open binary file with the allow-list (full unpickling when ``trust``).

    ``encoding=None`` reads Python-3 pickles as they are and falls back to latin1 for Python-2
    pickles holding numpy arrays or byte strings. ``standins(module, name)`` may return an inert
    replacement class for a foreign data class (e.g. ORT's ``misc.report.ReportData``), in both modes.
    """
    source = str(source)
    start = file.tell() if file.seekable() else None

    def attempt(enc: str) -> Any:
        if trust:
            trusted = _TrustedUnpickler(file, encoding=enc)
            trusted.standins = standins
            return trusted.load()
        unpickler = RestrictedUnpickler(file, encoding=enc)
        unpickler.source, unpickler.standins = source, standins
        return _plain(unpickler.load())

    try:
        try:
            return attempt(encoding or "ASCII")
        except UnicodeDecodeError:
            if encoding is not None or start is None:
                raise
            file.seek(start)
            return attempt("latin1")
    except CheckpointError as err:
        raise _reraise_nested(source, err) from None
    except (pickle.UnpicklingError, EOFError, UnicodeDecodeError, ValueError, TypeError,
            AttributeError, IndexError, KeyError, ImportError) as err:
        raise _decode_error(source, err) from None


def load_pickle(path: str | Path, *, trust: bool = False, encoding: str | None = None,
                standins: Standins | None = None) -> Any:
    """Read a plain pickle file through ``restricted_load``; a missing file is an ``InputError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointReadError(path, "file not found")
    with open(path, "rb") as handle:
        return restricted_load(handle, source=path, trust=trust, encoding=encoding, standins=standins)


# --------------------------------------------------------------------------------------------
# torch files (.pth / .bin / .pt / .pth.tar)
# --------------------------------------------------------------------------------------------

def _torch_file_kind(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head:
        return "empty"
    if head.startswith(b"PK"):
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    return "other"


def torch_load(path: str | Path, *, trust: bool = False, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """Load a torch checkpoint: weights-only, then the restricted unpickler, full only with ``trust``.

    ``mmap`` memory-maps the tensors of zip-format files on the weights-only path (large feature files).
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise CheckpointReadError(path, "file not found")
    kind = _torch_file_kind(path)
    if kind == "empty":
        raise CheckpointReadError(path, "empty file (0 bytes), not a torch checkpoint")
    if kind == "zip":
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise CheckpointReadError(path, f"truncated or corrupt torch zip archive ({err})") from None
        if bad is not None:
            raise CheckpointReadError(path, f"corrupt torch zip archive (member {bad} fails its CRC)")
    elif kind == "other":
        raise CheckpointReadError(path, "not a torch checkpoint (neither a zip archive nor a pickle; "
                                        "a text or other file?)")
    def attempt(encoding: str) -> Any:
        if trust:
            return torch.load(path, map_location=map_location, weights_only=False, encoding=encoding)
        try:
            return torch.load(path, map_location=map_location, weights_only=True,
                              mmap=mmap and kind == "zip")
        except pickle.UnpicklingError:
            pass  # needs more than tensors: try the restricted unpickler
        return _plain(torch.load(path, map_location=map_location, weights_only=False,
                                 pickle_module=_restricted_module(source), encoding=encoding))

    try:
        try:
            return attempt("utf-8")
        except UnicodeDecodeError:  # a Python-2 era file: byte strings are latin1
            return attempt("latin1")
    except CheckpointError as err:
        raise _reraise_nested(source, err) from None
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError, ValueError, TypeError,
            AttributeError, KeyError, ImportError, UnicodeDecodeError) as err:
        raise _decode_error(source, err) from None


def add_trust_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the standard ``--trust_checkpoint`` flag to a script's parser; returns the parser."""
    parser.add_argument(
        TRUST_FLAG, action="store_true",
        help="allow full unpickling of checkpoint/pickle files this run reads (can run code from "
             "the file: only for files whose origin you trust). Without it, pickles are read with "
             "an allow-list of data types and anything else is refused.")
    return parser
