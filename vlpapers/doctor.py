"""``vlpapers doctor``: is this machine ready for the papers? One line per check, each with a fix.

The traps users hit are environmental: a torchvision built for another torch (it breaks
``from transformers import ...`` with an unrelated error), no Java for METEOR, no video decoder,
launcher variables that point nowhere. Each check runs in isolation (imports that can crash run in a
child process) and reports ``ok``, ``warn`` (works, with a caveat), ``fail`` or ``info``.
Exit code 1 when a check that a chosen paper needs fails.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vlpapers.cli import PAPERS

_EVERY = frozenset(PAPERS)
_METEOR_USERS = frozenset({"visualcomet", "spatial_captioning", "clip4idc"})
_VIDEO_USERS = frozenset({"singularity", "set_abstraction"})


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: str  # ok | warn | fail | info
    detail: str
    fix: str = ""
    needed_by: frozenset[str] = frozenset()


def _child(code: str, timeout: float = 120.0) -> tuple[int, str]:
    """Run ``python -c code`` in a child (a broken import may abort the interpreter); (rc, last line)."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    lines = [line for line in (proc.stdout + proc.stderr).strip().splitlines() if line.strip()]
    return proc.returncode, (lines[-1].strip() if lines else "")


def check_torch() -> Check:
    import torch

    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build"
    device = (f"{torch.cuda.device_count()} GPU(s): {torch.cuda.get_device_name(0)}"
              if torch.cuda.is_available() else "no CUDA device, runs on CPU")
    return Check("torch", "ok", f"{torch.__version__} ({build}); {device}", needed_by=_EVERY)


def check_torchvision() -> Check:
    if importlib.util.find_spec("torchvision") is None:
        return Check("torchvision", "ok", "not installed (the project does not need it)", needed_by=_EVERY)
    rc, last = _child("import torchvision; print(torchvision.__version__)")
    if rc != 0:
        import torch
        return Check("torchvision", "fail", f"installed but does not import beside torch {torch.__version__}: {last}",
                     f"pip uninstall -y torchvision (not needed here), or install the torchvision "
                     f"release built for torch {torch.__version__}", needed_by=_EVERY)
    return Check("torchvision", "ok", f"{last} imports beside this torch", needed_by=_EVERY)


def check_transformers() -> Check:
    rc, last = _child("import transformers; from transformers import GPT2LMHeadModel, BertModel, "
                      "CLIPModel, BeitModel; print(transformers.__version__)")
    if rc != 0:
        hint = " (a mismatched torchvision is the usual cause: see the torchvision line)" \
            if importlib.util.find_spec("torchvision") is not None else ""
        return Check("transformers", "fail", f"model classes do not import: {last}{hint}",
                     "pip install -e '.[all]' in a fresh venv, then rerun vlpapers doctor", needed_by=_EVERY)
    return Check("transformers", "ok", f"{last}; GPT-2, BERT, CLIP and BEiT model classes import",
                 needed_by=_EVERY)


def check_java() -> Check:
    java = shutil.which("java")
    if java is None:
        return Check("java", "fail", "no `java` on PATH: METEOR (and the official PTB tokenizer) cannot run",
                     "install a Java 8+ runtime (e.g. apt-get install default-jre-headless) and put java on PATH",
                     needed_by=_METEOR_USERS)
    proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    first = (proc.stderr or proc.stdout).strip().splitlines()
    if proc.returncode != 0:
        return Check("java", "fail", f"{java} -version failed: {first[-1] if first else proc.returncode}",
                     "reinstall the Java runtime", needed_by=_METEOR_USERS)
    return Check("java", "ok", f"{java}: {first[0] if first else 'version unknown'}", needed_by=_METEOR_USERS)


def check_meteor() -> Check:
    try:
        from common.metrics.meteor import meteor_jar
        jar = meteor_jar()
    except Exception as err:  # pycocoevalcap missing or broken: say which
        return Check("METEOR jar", "fail", f"pycocoevalcap not importable ({type(err).__name__}: {err})",
                     "pip install pycocoevalcap==1.2", needed_by=_METEOR_USERS)
    if not jar.is_file():
        return Check("METEOR jar", "fail", f"{jar} missing", "pip install --force-reinstall pycocoevalcap==1.2",
                     needed_by=_METEOR_USERS)
    return Check("METEOR jar", "ok", str(jar), needed_by=_METEOR_USERS)


def check_spice() -> Check:
    try:
        from common.metrics.spice import MODEL_JARS, spice_lib
        lib = spice_lib()
    except Exception as err:
        return Check("SPICE", "info", f"unavailable ({type(err).__name__}: {err}); optional")
    missing = [name for name in MODEL_JARS if not (lib / name).is_file()]
    if missing:
        return Check("SPICE", "info", f"optional, not set up: {', '.join(missing)} missing in {lib}",
                     "only if you want SPICE: copy the Stanford CoreNLP 3.6.0 jars there (see common/metrics/spice.py)")
    return Check("SPICE", "ok", f"CoreNLP jars in {lib}")


def _write_clip(path: Path) -> None:
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(16):
            frame = np.full((48, 64, 3), i * 15, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _decode_with(reader: str, path: Path) -> int:
    if reader == "PyAV":
        import av
        with av.open(str(path)) as container:
            return sum(1 for _ in container.decode(video=0))
    if reader == "decord":
        import decord
        return len(decord.VideoReader(str(path)))
    import cv2
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def check_video() -> list[Check]:
    modules = {"PyAV": "av", "decord": "decord", "OpenCV": "cv2"}
    present = {name: importlib.util.find_spec(mod) is not None for name, mod in modules.items()}
    if not present["PyAV"]:
        return [Check("video decoding", "fail", "PyAV is not installed, so no test clip can be written or read",
                      "pip install av", needed_by=_VIDEO_USERS)]
    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "doctor.mp4"
        try:
            _write_clip(clip)
        except Exception as err:
            return [Check("video decoding", "fail", f"PyAV cannot encode a test clip ({type(err).__name__}: {err})",
                          "pip install --force-reinstall av", needed_by=_VIDEO_USERS)]
        working = 0
        for name in modules:
            if not present[name]:
                checks.append(Check(f"video: {name}", "info", "not installed",
                                    "optional: pip install decord (configs with reader: decord)" if name == "decord"
                                    else f"optional: pip install {modules[name]}"))
                continue
            try:
                frames = _decode_with(name, clip)
            except Exception as err:
                checks.append(Check(f"video: {name}", "warn", f"cannot decode an H.264 test clip ({err})",
                                    f"reinstall {modules[name]} with codec support"))
                continue
            status = "ok" if frames == 16 else "warn"
            working += status == "ok"
            checks.append(Check(f"video: {name}", status, f"decoded {frames}/16 frames of a generated clip"))
    if not working:
        checks.append(Check("video decoding", "fail", "no installed reader decodes a generated H.264 clip",
                            "pip install av opencv-python-headless", needed_by=_VIDEO_USERS))
    return checks


def check_cuda() -> Check:
    import torch

    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        extra = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        return Check("CUDA / NCCL", "info", f"no GPU visible{extra}: training runs on CPU with gloo",
                     "" if torch.version.cuda else "for GPUs install a CUDA build: make install TORCH_SPEC='torch==X+cuYYY'")
    nccl = torch.distributed.is_available() and torch.distributed.is_nccl_available()
    version = ".".join(map(str, torch.cuda.nccl.version())) if nccl else "unavailable"
    return Check("CUDA / NCCL", "ok" if nccl else "warn",
                 f"{torch.cuda.device_count()} GPU(s), CUDA {torch.version.cuda}, NCCL {version}",
                 "" if nccl else "multi-GPU runs fall back to gloo; install a torch build with NCCL")


def check_launcher(env: dict[str, str] | None = None) -> Check:
    from common.distributed import read_launch_env

    env = dict(os.environ if env is None else env)
    try:
        launch = read_launch_env(env)
    except ValueError as err:
        return Check("launcher", "fail", f"cannot read the launcher variables: {err}",
                     "check RANK/WORLD_SIZE or SLURM_PROCID/SLURM_NTASKS/SLURM_NODELIST", needed_by=_EVERY)
    if launch.launcher == "none":
        return Check("launcher", "ok", "no torchrun/slurm variables: one process", needed_by=_EVERY)
    where = f"{launch.launcher}: rank {launch.rank}/{launch.world_size}, local rank {launch.local_rank}"
    if not launch.master_addr:
        return Check("launcher", "fail", f"{where}, but MASTER_ADDR is not set",
                     "export MASTER_ADDR=<host of rank 0> (torchrun sets it for you)", needed_by=_EVERY)
    try:
        socket.getaddrinfo(launch.master_addr, None)
    except OSError as err:
        return Check("launcher", "fail", f"{where}; MASTER_ADDR {launch.master_addr!r} does not resolve ({err})",
                     "set MASTER_ADDR to a hostname or IP every node can resolve", needed_by=_EVERY)
    return Check("launcher", "ok", f"{where}; MASTER_ADDR {launch.master_addr} resolves, port {launch.master_port}",
                 needed_by=_EVERY)


def check_disk(run_dir: Path) -> Check:
    probe = run_dir.resolve()
    while not probe.exists():
        probe = probe.parent
    free_gib = shutil.disk_usage(probe).free / 2**30
    if free_gib < 1:
        return Check("disk", "fail", f"{free_gib:.2f} GiB free under {probe}", "free space or pass another run directory",
                     needed_by=_EVERY)
    status = "warn" if free_gib < 20 else "ok"
    return Check("disk", status, f"{free_gib:.1f} GiB free under {probe}",
                 "checkpoints of the real configurations take several GiB" if status == "warn" else "",
                 needed_by=_EVERY)


def run_checks(run_dir: Path) -> list[Check]:
    """Every check, in report order."""
    steps: list[Callable[[], Check | list[Check]]] = [
        check_torch, check_torchvision, check_transformers, check_java, check_meteor, check_spice,
        check_video, check_cuda, check_launcher, lambda: check_disk(run_dir)]
    checks: list[Check] = []
    for step in steps:
        result = step()
        checks.extend(result if isinstance(result, list) else [result])
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    """Print the report; 1 when a check needed by the chosen papers fails, else 0."""
    parser = argparse.ArgumentParser(prog="vlpapers doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--paper", action="append", choices=PAPERS,
                        help="only fail for what this paper needs (repeatable; default: every paper)")
    parser.add_argument("--run_dir", type=Path, default=Path("runs"),
                        help="where runs and checkpoints will be written (free-disk check); default runs/")
    args = parser.parse_args(argv)
    papers = frozenset(args.paper or PAPERS)
    checks = run_checks(args.run_dir)
    width = max(len(c.name) for c in checks)
    blocking = []
    for check in checks:
        print(f"[{check.status:^4}] {check.name:<{width}}  {check.detail}")
        if check.fix and check.status != "ok":
            print(f"       {'':<{width}}  fix: {check.fix}")
        if check.status == "fail" and check.needed_by & papers:
            blocking.append(check)
    if blocking:
        names = ", ".join(sorted(papers))
        print(f"\n{len(blocking)} check(s) needed by {names} failed: {', '.join(c.name for c in blocking)}")
        return 1
    print(f"\nready for {', '.join(sorted(papers))}")
    return 0
