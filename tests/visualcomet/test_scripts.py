"""Scripts: runnable by path from the subproject directory and as modules; --help documents every flag."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SUB = Path(__file__).resolve().parents[2] / "visualcomet"
SCRIPTS = ["run_finetuning", "run_generation", "evaluate_generation", "run_rank", "visualize"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_by_path_and_module(name):
    by_path = subprocess.run([sys.executable, f"scripts/{name}.py", "--help"], cwd=SUB, capture_output=True,
                             text=True, timeout=120)
    assert by_path.returncode == 0, by_path.stderr
    by_module = subprocess.run([sys.executable, "-m", f"visualcomet.scripts.{name}", "--help"], cwd=SUB.parent,
                               capture_output=True, text=True, timeout=120)
    assert by_module.returncode == 0 and by_module.stdout == by_path.stdout
    # every option has a help text
    import importlib

    parser = importlib.import_module(f"visualcomet.scripts.{name}").build_parser()
    assert all(action.help for action in parser._actions), [a.dest for a in parser._actions if not a.help]


def test_bad_input_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "scripts/evaluate_generation.py", "--gens_file", str(tmp_path / "no.json"),
                           "--refs_file", str(tmp_path / "r.json")], cwd=SUB, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no.json" in proc.stderr


def test_original_flag_defaults():
    from visualcomet.scripts import run_finetuning, run_generation, run_rank

    ft = run_finetuning.build_parser().parse_args(["--data_dir", "d", "--output_dir", "o"])
    assert (ft.model_type, ft.model_name_or_path, ft.mode, ft.max_seq_len, ft.per_gpu_train_batch_size,
            ft.learning_rate, ft.num_train_epochs, ft.save_steps, ft.logging_steps, ft.seed, ft.max_steps) == \
        ("gpt2_vc", "gpt2", "inference", -1, 64, 5e-5, 5.0, 10000, 500, 42, -1)
    gen = run_generation.build_parser().parse_args(["--data_dir", "d", "--split", "val"])
    assert (gen.length, gen.temperature, gen.top_k, gen.top_p, gen.do_sample, gen.num_samples, gen.max_seq_len,
            gen.gen_batch_size, gen.seed) == (20, 1.0, 0, 0.9, 1, 5, 128, 1, 42)
    rank = run_rank.build_parser().parse_args(["--data_dir", "d", "--split", "val"])
    assert (rank.rank_mode, rank.max_seq_len, rank.seed) == ("random_50", 128, 42)
