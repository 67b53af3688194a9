"""Reading the metadata files: torch pickles through the restricted loader, JSON, and the checks every
tensor read from them must pass (dtype, shape, finiteness) before any work starts."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from common.errors import InputError
from common.safe_pickle import torch_load


def load_pth(path: str | Path, trust: bool = False, mmap: bool = False) -> Any:
    """Read a ``torch.save`` metadata file on CPU through ``common.safe_pickle`` (spec 9.5).

    With ``mmap`` a weights-only memory-mapped read is tried first (spec 9.16 F: features are not copied
    into every worker); any failure there is diagnosed by the restricted loader, which names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    if mmap:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - re-read below, where every failure becomes one line
            pass
    return torch_load(path, trust=trust, map_location="cpu")


def load_json(path: str | Path) -> Any:
    """Parse a JSON file, naming the file on failure."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"invalid JSON ({err})") from None


def check_float_tensor(path: str | Path, value: Any, *, dim: int | None = None, width: int | None = None,
                       record: Any = None, field: str | None = None) -> torch.Tensor:
    """``value`` as a finite floating tensor with ``dim`` dims and last size ``width``; else an InputError."""
    if not isinstance(value, torch.Tensor):
        raise InputError(path, f"expected a float tensor, got {type(value).__name__}", record=record, field=field)
    if not value.is_floating_point():
        raise InputError(path, f"dtype {value.dtype} is not a floating type (expected float32)",
                         record=record, field=field)
    if dim is not None and value.dim() != dim:
        raise InputError(path, f"expected a {dim}-D tensor, got shape {list(value.shape)}", record=record, field=field)
    if width is not None and value.shape[-1] != width:
        raise InputError(path, f"width {value.shape[-1]} but the model expects {width}", record=record, field=field)
    if value.numel() == 0:
        raise InputError(path, f"empty tensor (shape {list(value.shape)})", record=record, field=field)
    return value


def first_non_finite(values: torch.Tensor, chunk: int = 65536) -> int | None:
    """Index (along dim 0) of the first row holding NaN or inf, read in chunks; None when all finite."""
    for start in range(0, values.shape[0], chunk):
        bad = ~torch.isfinite(values[start:start + chunk].reshape(min(chunk, values.shape[0] - start), -1)).all(1)
        if bad.any():
            return start + int(bad.nonzero()[0, 0])
    return None


def load_vector_dict(path: str | Path, width: int | None, what: str, trust: bool = False) -> dict[str, torch.Tensor]:
    """Read ``{name: FloatTensor[width]}`` keeping the stored order; every vector finite and floating."""
    data = load_pth(path, trust=trust)
    if not isinstance(data, Mapping):
        raise InputError(path, f"expected a dict {what} -> tensor, got {type(data).__name__}")
    if not data:
        raise InputError(path, f"holds no {what} embeddings (an empty dict)")
    for key, value in data.items():
        check_float_tensor(path, value, dim=1, width=width, record=key, field="embedding")
        if not torch.isfinite(value).all():
            raise InputError(path, "holds NaN or inf values", record=key, field="embedding")
    return dict(data)
