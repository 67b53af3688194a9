"""vlpapers: the doctor reports broken environments with fixes; the verbs forward to the papers' entries."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlpapers import cli, doctor

ROOT = Path(__file__).resolve().parents[2]


def _run(args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "vlpapers", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_doctor_names_a_broken_torchvision_and_a_missing_java(tmp_path):
    fake = tmp_path / "site" / "torchvision"
    fake.mkdir(parents=True)
    # what PyPI's torchvision 0.28 does beside the torch 2.13 CPU wheel
    (fake / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT)]),
           "PATH": str(tmp_path / "empty_bin")}
    proc = _run(["doctor", "--paper", "visualcomet", "--run_dir", str(tmp_path)], env=env)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    tv = next(line for line in out.splitlines() if "torchvision" in line and line.startswith("["))
    assert tv.startswith("[fail]") and "operator torchvision::nms does not exist" in tv
    assert "pip uninstall -y torchvision" in out
    java = next(line for line in out.splitlines() if line.startswith("[") and " java " in line)
    assert java.startswith("[fail]") and "no `java` on PATH" in java
    assert "install a Java 8+ runtime" in out
    # transformers' model imports trip over the broken torchvision too, and the line says why
    tf = next(line for line in out.splitlines() if line.startswith("[") and " transformers " in line)
    assert tf.startswith("[fail]") and "mismatched torchvision is the usual cause" in tf
    assert "check(s) needed by visualcomet failed: torchvision, transformers, java" in out


def test_doctor_exit_code_follows_the_chosen_paper(monkeypatch, capsys):
    def fake_checks(run_dir):
        return [doctor.Check("java", "fail", "missing", "install java", needed_by=doctor._METEOR_USERS),
                doctor.Check("torch", "ok", "fine", needed_by=doctor._EVERY)]
    monkeypatch.setattr(doctor, "run_checks", fake_checks)
    assert doctor.main(["--paper", "singularity"]) == 0
    assert doctor.main(["--paper", "clip4idc"]) == 1
    assert "[fail] java" in capsys.readouterr().out


@pytest.mark.parametrize("env, status, text", [
    ({}, "ok", "one process"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "localhost", "MASTER_PORT": "29500"}, "ok", "resolves"),
    ({"RANK": "1", "WORLD_SIZE": "2"}, "fail", "MASTER_ADDR is not set"),
    ({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "no-such-host.invalid"}, "fail", "does not resolve"),
])
def test_launcher_check(env, status, text):
    check = doctor.check_launcher(env)
    assert check.status == status and text in check.detail


def test_verbs_forward_to_the_papers_entry_points():
    command = cli.entry_command("convert", "visualcomet", ["--check-keys", "x.txt"])
    assert command == [sys.executable, "-m", "visualcomet.convert", "--check-keys", "x.txt"]
    command = cli.entry_command("evaluate", "spatial_captioning", ["--help"])
    assert command[-2:] == [str(ROOT / "spatial_captioning" / "eval.py"), "--help"]
    with pytest.raises(SystemExit):
        cli.entry_command("demo", "nopaper", [])
    proc = _run(["convert", "set_abstraction", "--help"])
    assert proc.returncode == 0 and "--check-keys" in proc.stdout
    proc = _run(["--help"])
    assert proc.returncode == 0 and all(p in proc.stdout for p in cli.PAPERS) and "doctor" in proc.stdout
