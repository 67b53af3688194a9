"""The monorepo's promises: layout, per-paper extras, make targets, CI entry, the one-line input error."""
from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from common.errors import InputError, run_cli

SUBPROJECTS = ["visualcomet", "set_abstraction", "spatial_captioning", "clip4idc", "singularity"]


def test_each_subproject_is_a_package_with_requirements_and_an_extra(repo_root):
    pyproject = tomllib.loads((repo_root / "pyproject.toml").read_text())
    extras = pyproject["tool"]["setuptools"]["dynamic"]["optional-dependencies"]
    for name in SUBPROJECTS:
        assert (repo_root / name / "__init__.py").is_file(), name
        assert (repo_root / name / "requirements.txt").is_file(), name
        assert extras[name]["file"] == [f"{name}/requirements.txt"]
        assert f"{name}/requirements.txt" in extras["all"]["file"]


def test_ci_runs_make_test_and_fails_on_failure(repo_root):
    script = (repo_root / ".ci" / "run").read_text()
    assert "make test" in script and "set -euo pipefail" in script


def test_make_help_lists_every_target_with_a_line(repo_root):
    out = subprocess.run(["make", "--no-print-directory", "help"], cwd=repo_root, capture_output=True,
                         text=True, check=True).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    for target in ("install", "test", "demo", "bench"):
        assert target in names
    declared = subprocess.run(["make", "-qp"], cwd=repo_root, capture_output=True, text=True).stdout
    for line in declared.splitlines():
        if line.endswith("-demo:") or "-demo: " in line:
            assert line.split(":")[0] in names, f"{line.split(':')[0]} has no help line"


def test_input_error_is_one_line_naming_file_record_field(capsys):
    err = InputError("data/train.json", "expected a list", record=3, field="boxes")
    assert str(err) == "data/train.json: record 3: field 'boxes': expected a list"

    def main(argv):
        raise err

    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: {err}\n"


def test_run_cli_propagates_other_exceptions():
    def main(argv):
        raise KeyError("bug")

    with pytest.raises(KeyError):
        run_cli(main, [])


def test_common_imports_no_paper_code():
    code = ("import sys, common.checkpoint, common.distributed, common.errors; "
            f"bad = [m for m in sys.modules if m.split('.')[0] in {SUBPROJECTS!r}]; "
            "sys.exit(str(bad) if bad else 0)")
    subprocess.run([sys.executable, "-c", code], check=True)
