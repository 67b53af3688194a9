"""Same as spatial_captioning/prepro_areas.py (the README runs it from the repository root)."""
from __future__ import annotations

from common.errors import run_cli
from spatial_captioning.prepro_areas import main

if __name__ == "__main__":
    run_cli(main)
