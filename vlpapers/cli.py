"""``vlpapers VERB PAPER [ARGS...]``: a thin dispatcher over the papers' own entry points.

Every verb runs the paper's existing script or module in a child process with the arguments
unchanged, so each paper's ``--help`` and flags are exactly those of the original layout.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

PAPERS = ("visualcomet", "set_abstraction", "spatial_captioning", "clip4idc", "singularity")

# verb -> paper -> ("module", name) | ("script", path relative to the repository root)
ENTRY_POINTS: dict[str, dict[str, tuple[str, str]]] = {
    "demo": {paper: ("module", f"{paper}.demo") for paper in PAPERS},
    "convert": {paper: ("module", f"{paper}.convert") for paper in PAPERS},
    "predict": {
        "visualcomet": ("module", "visualcomet.predict"),
        "set_abstraction": ("module", "set_abstraction.predict"),
        "spatial_captioning": ("script", "spatial_captioning/eval.py"),
        "clip4idc": ("module", "clip4idc.predict"),
        "singularity": ("module", "singularity.ask"),
    },
    "evaluate": {
        "visualcomet": ("script", "visualcomet/scripts/evaluate_generation.py"),
        "set_abstraction": ("script", "set_abstraction/test.py"),
        "spatial_captioning": ("script", "spatial_captioning/eval.py"),
        "clip4idc": ("script", "clip4idc/main_task_caption.py"),
        "singularity": ("script", "singularity/scripts/eval_ret.sh"),
    },
}

VERB_HELP = {
    "doctor": "check this machine for what the papers need (torch, torchvision, Java/METEOR, video codecs, CUDA/NCCL, launcher variables, disk)",
    "demo": "run a paper's pipeline on its embedded synthetic data (<paper>.demo)",
    "convert": "map/check released checkpoints (<paper>.convert, e.g. --check-keys FILE)",
    "predict": "run a trained or released model on your own input (visualcomet.predict, eval.py --image_folder, clip4idc.predict, ...)",
    "evaluate": "the paper's evaluation script (evaluate_generation.py, test.py, eval.py, main_task_caption.py --do_eval, eval_ret.sh)",
}

REPO_ROOT = Path(__file__).resolve().parent.parent


def _available(kind: str, target: str) -> bool:
    if kind == "module":
        return importlib.util.find_spec(target) is not None
    return (REPO_ROOT / target).is_file()


def entry_command(verb: str, paper: str, args: Sequence[str]) -> list[str]:
    """The child command line for ``vlpapers VERB PAPER ARGS``; raises SystemExit(2) when absent."""
    if paper not in PAPERS:
        raise SystemExit(f"error: unknown paper {paper!r}; choose one of {', '.join(PAPERS)}")
    kind, target = ENTRY_POINTS[verb][paper]
    if not _available(kind, target):
        print(f"error: vlpapers {verb} {paper}: this version has no {target} entry point", file=sys.stderr)
        raise SystemExit(2)
    if kind == "module":
        return [sys.executable, "-m", target, *args]
    path = REPO_ROOT / target
    return (["bash", str(path)] if path.suffix == ".sh" else [sys.executable, str(path)]) + list(args)


def _usage() -> str:
    lines = ["usage: vlpapers VERB [PAPER] [ARGS...]", "", "verbs:"]
    lines += [f"  {verb:<9} {text}" for verb, text in VERB_HELP.items()]
    lines += ["", "papers: " + ", ".join(PAPERS), "",
              "ARGS are passed unchanged to the paper's own script; `vlpapers VERB PAPER --help` shows them.",
              "examples:",
              "  vlpapers doctor --paper singularity",
              "  vlpapers demo clip4idc",
              "  vlpapers convert visualcomet --check-keys tests/fixtures/visualcomet_state_dict_keys.txt",
              "  vlpapers evaluate spatial_captioning --model MODEL.pth --infos_path INFOS.pkl"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    verb, rest = argv[0], argv[1:]
    if verb == "doctor":
        from vlpapers.doctor import main as doctor_main
        return doctor_main(rest)
    if verb not in ENTRY_POINTS:
        print(f"error: unknown verb {verb!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if not rest or rest[0].startswith("-"):
        parser = argparse.ArgumentParser(prog=f"vlpapers {verb}")
        parser.error(f"name a paper: {', '.join(PAPERS)}")
    command = entry_command(verb, rest[0], rest[1:])
    return subprocess.call(command)
