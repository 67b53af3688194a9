"""Resolution of the model-size JSON files named in the YAML configs (relative to the package)."""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# vit_name_or_pretrained_path values of the original -> bundled config JSON (weights cannot be downloaded here)
KNOWN_VIT_CONFIGS = {"microsoft/beit-base-patch16-224-pt22k-ft22k": "configs/beit-base-patch16-224-pt22k-ft22k.json"}


def resolve_path(path: str) -> Path:
    """Absolute path for ``path``; relative paths are looked up in the cwd, then the package directory."""
    p = Path(str(path))
    if p.is_absolute() or p.exists():
        return p
    return PACKAGE_DIR / p


def cfg_get(config, key: str, default=None):
    """``config[a][b]`` for ``key='a.b'`` on dicts or DictConfigs, ``default`` when absent or None."""
    node = config
    for part in key.split("."):
        if node is None:
            return default
        try:
            node = node[part]
        except (KeyError, TypeError, AttributeError):
            return default
    return default if node is None else node
