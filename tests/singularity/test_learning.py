"""Learning tests on the synthetic colour x shape clips (spec 10.3 items 1, 3, 4): metric vs chance."""
import json

import pytest

from common.experiment_log import read_metrics
from common.safe_pickle import torch_load


@pytest.fixture(scope="module")
def trained_retrieval(syn_dir, tiny_config, tmp_path_factory):
    """Retrieval fine-tuning from random init (ITC + ITM, 40 epochs of 12 steps)."""
    from singularity.tasks.retrieval import run_retrieval

    out = tmp_path_factory.mktemp("ret") / "run"
    results = run_retrieval(tiny_config(syn_dir, "ret_syn", f"output_dir={out}", "eval_after_training=False"))
    return out, results


def test_retrieval_learns(trained_retrieval):
    out, results = trained_retrieval
    chance = 100 / 16
    # ITC text-to-video R@1 vs 6.25 chance: 75.0 in the demo (81.25 before evaluation opened its loader once),
    # 62.5-81.25 over data/training seeds 0-4
    assert results["syn_test_emb/"]["img_r1"] >= 60, results
    assert results["syn_test/"]["img_r1"] >= 4 * chance, results  # ITM re-ranked (ITM learns late, spec 10.1; 62.5-94)
    lines = [json.loads(line) for line in (out / "train_stats.jsonl").read_text().splitlines()]
    first = lines[0]["video-loss_ita"]
    last = lines[-1]["epoch_avg"]["video-loss_ita"]
    assert last < 0.6 * first, (first, last)  # > 40% drop from ~ln(B)
    saved = json.loads((out / "eval_res_latest.json").read_text())
    assert saved == results and set(saved) == {"syn_test/", "syn_test_emb/"}
    assert (out / "ckpt_best.pth").is_file() and (out / "eval_res_best.json").is_file()
    assert "Train Epoch: [39]" in (out / "train.log").read_text()


def test_multiple_choice_with_retrieval_model(trained_retrieval, syn_dir, tiny_config):
    from singularity.tasks.retrieval_mc import run_mc

    out, _ = trained_retrieval
    acc = run_mc(tiny_config(syn_dir, "mc_syn", f"output_dir={out.parent / 'mc'}",
                             f"pretrained_path={out / 'ckpt_best.pth'}"))
    # chance 20 (5 options); spec 10.3 asks >= 80: 93.75 here, 87.5 / 87.5 / 81.25 with 3 other data/training seeds
    assert acc >= 80, acc
    assert json.loads((out.parent / "mc" / "eval_res.json").read_text()) == {"test": acc}
    preds = torch_load(out.parent / "mc" / "prediction_scores.pth")  # restricted: numpy arrays only
    assert len(preds) == 16 and set(preds[0]) >= {"video", "options", "answer", "pred_ans_ensemble",
                                                  "pred_scores_ensemble"}
    late = run_mc(tiny_config(syn_dir, "mc_syn", f"output_dir={out.parent / 'mc_max'}", "eval_frame_ensemble=max",
                              f"pretrained_path={out / 'ckpt_best.pth'}"))
    assert 0 <= late <= 100
    preds = torch_load(out.parent / "mc_max" / "prediction_scores.pth")
    assert preds[0]["pred_scores_frame"].shape == (4, 5)


def test_qa_learns(trained_retrieval, syn_dir, tiny_config, tmp_path):
    """QA fine-tuned from the retrieval checkpoint (the original fine-tunes QA from a trained checkpoint)."""
    from singularity.tasks.vqa import run_vqa

    out = tmp_path / "qa"
    ret, _ = trained_retrieval
    # the retrieval checkpoint has no MLM head, so the decoder's prediction head starts fresh (allow_partial)
    results = run_vqa(tiny_config(syn_dir, "qa_syn", f"output_dir={out}", "eval_after_training=False",
                                  f"pretrained_path={ret / 'ckpt_best.pth'}", "allow_partial=True"))
    # chance 12.5 (8 answers), majority 25; spec 10.3 asks >= 80 on the 128 val questions (64 clips x colour and
    # shape): 89.06 in the demo with fused AdamW (95.31 with the for-each kernel), 96.09 / 85.16 / 93.75 / 89.06 with
    # data/training seeds 1-4 (colour questions all right)
    assert results["val"]["overall"] >= 80, results
    preds = json.loads((out / "val_latest.json").read_text())
    assert len(preds) == 128 and set(preds[0]) == {"question_id", "answer"}
    assert json.loads((out / "eval_res_best.json").read_text())["val"]["overall"] >= 80
    assert (out / "val_best.json").is_file() and (out / "dist_res" / "val_latest_rank0.json").is_file()
    # common metrics.jsonl (issue 16): one validation accuracy per epoch beside the training loss
    val = [r for r in read_metrics(out) if r["split"] == "val" and r["name"] == "val/overall"]
    assert len(val) == 30 and val[-1]["value"] == results["val"]["overall"]


def test_temporal_model_learns_direction(trained_retrieval, syn_dir, tiny_config, tmp_path):
    """Singularity-temporal (4 frames) from the 1-frame checkpoint tells red->blue from blue->red; 1-frame cannot."""
    from singularity.tasks.retrieval import run_retrieval

    out, _ = trained_retrieval
    init = f"pretrained_path={out / 'ckpt_best.pth'}"
    single = run_retrieval(tiny_config(syn_dir, "temporal_1frm_syn", "evaluate=True", init,
                                       f"output_dir={tmp_path / 'one'}"))
    # frame order is invisible to the 1-frame model: a clip's two direction captions score the same up to float
    # rounding (mean over the same frames in another order), so which wins is rounding noise around chance (50)
    assert 37.5 <= single["motion_test_emb/"]["txt_r1"] <= 62.5, single
    temporal = run_retrieval(tiny_config(syn_dir, "temporal_syn", init, "allow_partial=True",
                                         f"output_dir={tmp_path / 'temporal'}", "eval_after_training=False"))
    assert temporal["motion_test_emb/"]["txt_r1"] >= 75, temporal


def test_late_fusion_and_offloaded_eval(trained_retrieval, syn_dir, tiny_config, tmp_path):
    """eval_frame_ensemble=lse (per-frame ITM, aggregated) with features kept on CPU (eval_offload)."""
    from singularity.tasks.retrieval import run_retrieval

    out, early = trained_retrieval
    late = run_retrieval(tiny_config(syn_dir, "ret_syn", "evaluate=True", f"pretrained_path={out / 'ckpt_best.pth'}",
                                     "eval_frame_ensemble=lse", "eval_offload=True", f"output_dir={tmp_path / 'lse'}"))
    assert late["syn_test_emb/"] == early["syn_test_emb/"]  # ITC is the same mean of per-frame similarities
    assert late["syn_test/"]["img_r1"] > 100 / 16
