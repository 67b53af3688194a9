"""METEOR 1.5 through the jar that pycocoevalcap ships (identical numbers: same jar, same protocol).

``java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm``: one ``SCORE ||| refs ||| hyp`` line per item
gives its statistics, then one ``EVAL ||| stats ||| ...`` line gives the per-item scores and the corpus
score, exactly as pycocoevalcap's ``Meteor.compute_score`` does.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path


class MetricUnavailable(RuntimeError):
    """A metric cannot run here (missing Java, missing models); the message says what to install."""


def meteor_jar() -> Path:
    """Path of pycocoevalcap's meteor-1.5.jar."""
    return pycocoevalcap_dir() / "meteor" / "meteor-1.5.jar"


def pycocoevalcap_dir() -> Path:
    """Directory of the installed pycocoevalcap package (a namespace package: no __init__)."""
    spec = importlib.util.find_spec("pycocoevalcap.meteor.meteor")
    if spec is None or spec.origin is None:
        raise MetricUnavailable("pycocoevalcap is not installed: pip install pycocoevalcap==1.2")
    return Path(spec.origin).resolve().parents[1]


def find_java() -> str:
    """The java executable, or MetricUnavailable naming the missing `java`."""
    java = shutil.which("java")
    if java is None:
        raise MetricUnavailable(
            "METEOR needs `java` (Java 8+) on PATH, and none was found; install a JRE "
            "(e.g. `apt-get install default-jre-headless`) or leave METEOR out (metrics=[...])"
        )
    return java


class MeteorScorer:
    """One METEOR JVM serving several scoring calls (each as pycocoevalcap's ``compute_score``):
    ``with MeteorScorer() as scorer: scorer.score(hyps, refs)``. Starting the JVM costs seconds, so
    callers that score several subsets (per change type, per split) keep one open."""

    def __init__(self) -> None:
        java = find_java()
        jar = meteor_jar()
        if not jar.is_file():
            raise MetricUnavailable(f"{jar} is missing: reinstall pycocoevalcap==1.2")
        self.proc = subprocess.Popen(
            [java, "-jar", "-Xmx2G", jar.name, "-", "-", "-stdio", "-l", "en", "-norm"],
            cwd=str(jar.parent), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ},
        )
        self._stderr: list[bytes] = []
        self._reader = threading.Thread(target=lambda: self._stderr.append(self.proc.stderr.read()), daemon=True)
        self._reader.start()

    def __enter__(self) -> "MeteorScorer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the JVM."""
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.kill()
        self.proc.wait()

    def _line(self) -> str:
        out = self.proc.stdout.readline()
        if not out:
            raise MetricUnavailable(_java_failure(self.proc, self._stderr, self._reader))
        return out.decode().strip()

    def score(self, hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
        """(corpus METEOR, per-item scores) for tokenised hypotheses and their reference lists."""
        if len(hypotheses) != len(references):
            raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
        if not hypotheses:
            return 0.0, []
        lines = []
        for hyp, refs in zip(hypotheses, references):
            hyp = hyp.replace("|||", "").replace("  ", " ")
            lines.append(" ||| ".join(("SCORE", " ||| ".join(refs), hyp)))

        def write_scores() -> None:
            for line in lines:
                self.proc.stdin.write(f"{line}\n".encode())
            self.proc.stdin.flush()

        writer = threading.Thread(target=write_scores, daemon=True)
        writer.start()
        stats = [self._line() for _ in lines]
        writer.join()
        self.proc.stdin.write(("EVAL ||| " + " ||| ".join(stats) + "\n").encode())
        self.proc.stdin.flush()
        scores = [float(self._line()) for _ in lines]
        return float(self._line()), scores


def meteor(hypotheses: Sequence[str], references: Sequence[Sequence[str]],
           scorer: MeteorScorer | None = None) -> tuple[float, list[float]]:
    """(corpus METEOR, per-item scores) for tokenised hypotheses and their reference lists, through
    ``scorer`` (an open MeteorScorer) or a JVM started for this call."""
    if scorer is not None:
        return scorer.score(hypotheses, references)
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if not hypotheses:
        find_java()
        if not meteor_jar().is_file():
            raise MetricUnavailable(f"{meteor_jar()} is missing: reinstall pycocoevalcap==1.2")
        return 0.0, []
    with MeteorScorer() as own:
        return own.score(hypotheses, references)


def _java_failure(proc: subprocess.Popen, chunks: list[bytes], reader: threading.Thread) -> str:
    proc.kill()
    proc.wait()
    reader.join(timeout=5)
    err = b"".join(chunks).decode(errors="replace").strip().splitlines()
    return "METEOR (java -jar meteor-1.5.jar) stopped early" + (f": {err[-1]}" if err else "")
