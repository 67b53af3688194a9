"""Learning test (spec 10), one run of the real two-stage pipeline at the tiny configuration on the
synthetic CLEVR-Change set: stage 1 (IDC adaptation, main_task_retrieval's flags) retrieves pairs and
change captions far above chance; stage 2 initialised from it with --init_model (the hand-off of the real
pipeline) separates change from no-change pairs well above the majority baseline (spec 10's recipe and
assertions); a second stage 2 from the same stage-1 weights with the demo's recipe (CLIP at 1/100 of the
decoder LR) names the change type well above the majority baseline. One test function so that
pytest-xdist never runs stage 1 twice."""
import json

from common.experiment_log import read_metrics

from clip4idc.data.clevr import ClevrChange
from clip4idc.demo import type_table
from clip4idc.evaluation import change_accuracy
from clip4idc.params import build_parser, check_args
from clip4idc.synthetic import caption_type, write_clevr
from clip4idc.train import run

N_TEST = 40


def test_two_stage_pipeline_learns(tmp_path, tiny_flags):
    data = write_clevr(tmp_path / "clevr", n_train=160, n_val=4, n_test=N_TEST, size=28, seed=1)
    argv = ["--do_train", "--data_path", str(data), "--output_dir", str(tmp_path / "retrieval"), "--batch_size", "16",
            "--epochs", "10", "--seed", "0", "--n_display", "1000"] + tiny_flags
    metrics = run(check_args(build_parser("retrieval").parse_args(argv), "retrieval"), "retrieval")["last"]
    chance = 100.0 / N_TEST
    print(f"text->pair R@1 {metrics['R1']:.1f}, pair->text R@1 {metrics['V2T$R1']:.1f}, chance {chance:.1f}")
    assert metrics["V2T$R1"] >= 6 * chance
    assert metrics["R1"] >= 3 * chance
    assert metrics["MeanR"] < 0.35 * N_TEST  # random ranking gives ~20.5

    out = tmp_path / "caption"
    argv = ["--do_train", "--data_path", str(data), "--output_dir", str(out), "--batch_size", "16", "--epochs", "6",
            "--seed", "0", "--init_model", str(tmp_path / "retrieval" / "pytorch_model.bin.9"), "--caption_metrics",
            "Bleu", "--n_visualize", "0", "--gt_dir", str(tmp_path / "no_gt_dir")] + tiny_flags
    run(check_args(build_parser("caption").parse_args(argv), "caption"), "caption")
    hyps = {h["image_id"]: h["caption"] for h in json.loads((out / "hyp_ep_5.json").read_text())}
    changed = [caption_type(c) != "none" for i, c in hyps.items() if not i.endswith("_n")]
    no_change = [caption_type(c) == "none" for i, c in hyps.items() if i.endswith("_n")]
    discrimination = (sum(changed) / len(changed) + sum(no_change) / len(no_change)) / 2
    losses = [r["value"] for r in read_metrics(out) if r["name"] == "loss"]
    print(f"discrimination {discrimination:.2f} (majority 0.50), no-change exact {sum(no_change) / len(no_change):.2f}")
    assert discrimination >= 0.65
    assert sum(no_change) / len(no_change) >= 0.9
    assert losses[-1] < losses[0] / 10  # from ~2 ln(49408) = 21.6; a sanity check only (spec 10)

    # Change type, with the demo's stage-2 recipe: the stage-1 pair encoder is kept nearly fixed (coef_lr 0.01,
    # batch 8, 160 steps) while the new decoder learns to read it.
    out = tmp_path / "caption_types"
    argv = ["--do_train", "--data_path", str(data), "--output_dir", str(out), "--batch_size", "8", "--epochs", "8",
            "--seed", "0", "--init_model", str(tmp_path / "retrieval" / "pytorch_model.bin.9"), "--caption_metrics",
            "Bleu", "--n_visualize", "0", "--gt_dir", str(tmp_path / "no_gt_dir")] + tiny_flags + ["--coef_lr", "0.01"]
    run(check_args(build_parser("caption").parse_args(argv), "caption"), "caption")
    hyps = {h["image_id"]: h["caption"] for h in json.loads((out / "hyp_ep_7.json").read_text())}
    clevr = ClevrChange(data)
    acc = change_accuracy(hyps, type_table(clevr, clevr.scene_ids("test")), caption_type)
    print(f"change-type accuracy {acc['type_acc']:.3f} (majority {acc['type_acc_majority']:.3f})")
    assert acc["type_acc_majority"] == 0.2  # stratified test split: 8 pairs of each of the 5 types
    # Observed 0.50-0.725 over four data/training seed pairs (this one: 0.70); 2x the majority class.
    assert acc["type_acc"] >= 0.4
