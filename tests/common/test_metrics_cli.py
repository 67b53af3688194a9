"""``python -m common.metrics``: COCO files in, table out; bad input gives one clear line and exit status 2."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from common.errors import run_cli
from common.metrics import evaluate
from common.metrics.__main__ import main
from common.metrics.synthetic import caption_sets, coco_files


@pytest.fixture()
def coco(tmp_path):
    records = caption_sets(25, 6, seed=2)
    refs, preds = coco_files(records)
    rp, pp = tmp_path / "refs.json", tmp_path / "preds.json"
    rp.write_text(json.dumps(refs))
    pp.write_text(json.dumps(preds))
    return rp, pp, refs, preds


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, argv)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_table_matches_evaluate(coco, capsys):
    rp, pp, refs, preds = coco
    code, out, err = _cli(["--references", str(rp), "--predictions", str(pp), "--metrics", "Bleu", "ROUGE_L",
                           "CIDEr"], capsys)
    assert code == 0, err
    ref_map: dict = {}
    for a in refs["annotations"]:
        ref_map.setdefault(a["image_id"], []).append(a["caption"])
    expected = evaluate(ref_map, {p["image_id"]: p["caption"] for p in preds}, ["Bleu", "ROUGE_L", "CIDEr"])
    rows = {line.split()[0]: float(line.split()[1]) for line in out.splitlines()[2:] if line and line[0] != "-"}
    assert set(rows) == set(expected)
    for key, value in expected.items():
        assert rows[key] == pytest.approx(value, abs=5e-7)


def test_plain_list_references_and_output_file(coco, capsys, tmp_path):
    rp, pp, refs, preds = coco
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps([{"image_id": a["image_id"], "caption": a["caption"]} for a in refs["annotations"]]))
    out_json = tmp_path / "scores.json"
    code, out, _ = _cli(["--references", str(plain), "--predictions", str(pp), "--metrics", "CIDEr",
                         "--output", str(out_json)], capsys)
    assert code == 0
    assert list(json.loads(out_json.read_text())) == ["CIDEr"]
    code, _, err = _cli(["--references", str(plain), "--predictions", str(pp), "--metrics", "CIDEr",
                         "--output", str(out_json)], capsys)
    assert code == 2 and "exists" in err


def test_missing_id_is_one_clear_line(coco, capsys, tmp_path):
    rp, pp, refs, preds = coco
    bad = tmp_path / "preds_bad.json"
    bad.write_text(json.dumps(preds + [{"image_id": "nowhere.png", "caption": "a cat"}]))
    code, out, err = _cli(["--references", str(rp), "--predictions", str(bad)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "nowhere.png" in err and "no reference captions" in err
    assert err.startswith(f"error: {bad}")  # the predictions are at fault, not the references


@pytest.mark.parametrize("content,message", [("", "file is empty"), ("[]", "no caption records"),
                                             ("{\"images\": []}", "annotations"), ("[{\"caption\": \"x\"}]",
                                                                                   "field 'image_id'"),
                                             ("[{\"image_id\": 1,", "not valid JSON: Expecting")])
def test_bad_files_are_one_clear_line(coco, capsys, tmp_path, content, message):
    rp, pp, _, _ = coco
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    for args in (["--references", str(bad), "--predictions", str(pp)],
                 ["--references", str(rp), "--predictions", str(bad)]):
        code, _, err = _cli(args, capsys)
        assert code == 2 and err.count("\n") == 1 and message in err and str(bad) in err
        assert "at at" not in err and "starting at" not in err


def test_missing_prediction_needs_subset(coco, capsys, tmp_path):
    rp, pp, refs, preds = coco
    fewer = tmp_path / "fewer.json"
    fewer.write_text(json.dumps(preds[1:]))
    code, _, err = _cli(["--references", str(rp), "--predictions", str(fewer)], capsys)
    assert code == 2 and err.count("\n") == 1 and preds[0]["image_id"] in err and "--subset" in err
    code, out, _ = _cli(["--references", str(rp), "--predictions", str(fewer), "--subset", "--metrics", "CIDEr"],
                        capsys)
    assert code == 0 and f"{len(preds) - 1} predictions" in out


def test_duplicate_prediction_is_refused(coco, capsys, tmp_path):
    rp, pp, refs, preds = coco
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps(preds + preds[:1]))
    code, _, err = _cli(["--references", str(rp), "--predictions", str(dup)], capsys)
    assert code == 2 and "more than one prediction" in err


def test_module_entry_point(coco):
    rp, pp, _, _ = coco
    done = subprocess.run([sys.executable, "-m", "common.metrics", "--references", str(rp), "--predictions", str(pp),
                           "--metrics", "CIDEr"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "CIDEr" in done.stdout
    done = subprocess.run([sys.executable, "-m", "common.metrics", "--references", str(rp), "--predictions",
                           str(rp.parent / "missing.json")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
