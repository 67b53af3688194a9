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


def test_synthetic_cli_writes_the_real_formats(tmp_path):
    import json

    from visualcomet import data as vdata
    from visualcomet import synthetic

    assert synthetic.main(["--out", str(tmp_path), "--feature_dim", "16"]) == 0
    files = vdata.split_files(tmp_path)
    annots = {s: vdata.load_annotations(f) for s, f in files.items()}
    assert [len(a) for a in annots.values()] == [80, 16, 4]
    assert "intent" not in annots["test"][0] and annots["val"][0]["split"] == "val"
    assert len(vdata.finetune_records(annots["train"])) == 480
    paths = vdata.DataPaths.resolve(str(tmp_path))
    for ann in annots["val"]:  # every metadata file passes the loader's checks; mentioned people are persons
        meta = vdata.load_metadata(str(paths.images_dir / ann["metadata_fn"]))
        img, objs = vdata.load_features(str(paths.features_dir / (vdata.image_id(ann["img_fn"]) + ".pkl")))
        assert objs.shape == (len(meta["names"]), 16) and img.dtype.name == "float32"
        for tag in vdata.map_numbers(ann["event"])[1]:
            assert meta["names"][int(tag) - 1] == "person"
    cfg = json.loads((tmp_path / "gpt2-tiny" / "config.json").read_text())
    assert cfg["feature_dim"] == 16 and (tmp_path / "gpt2-tiny" / "merges.txt").is_file()


def test_visualize_writes_png(vc_data, tmp_path):
    import json

    from visualcomet.scripts import visualize

    annots = json.loads((vc_data / "val_annots.json").read_text())
    gens = [dict({k: a[k] for k in ("img_fn", "metadata_fn", "event", "place")}, event_idx=i,
                 inference_relation=rel, generations=[f"{rel} text {i}", "second"])
            for i, a in enumerate(annots[:2]) for rel in ("intent", "before", "after")]
    gens_file = tmp_path / "gens.json"
    gens_file.write_text(json.dumps(gens))
    png = tmp_path / "vis.png"
    assert visualize.main(["--gens_file", str(gens_file), "--data_dir", str(vc_data), "--out_png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    from common.errors import InputError

    with pytest.raises(InputError, match="exists"):
        visualize.main(["--gens_file", str(gens_file), "--data_dir", str(vc_data), "--out_png", str(png)])
