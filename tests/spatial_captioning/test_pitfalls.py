"""Spec section 9 items not pinned elsewhere (F fixed, K kept)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from common.errors import InputError
from sc_helpers import train_argv
from spatial_captioning.checkpoints import find_infos, find_model_file, infos_name
from spatial_captioning.evaluation import language_eval
from spatial_captioning.models import load_config, setup
from spatial_captioning.opts import parse_train_opt
from spatial_captioning.training import Trainer


def test_head_file_names_are_read_and_best_score_may_be_skipped(syn, tmp_path):
    """9.5: write model.pth/infos_<id>.pkl, read HEAD's model.pt/infos.pkl; 9.6: --load_best_score 0 works."""
    Trainer(parse_train_opt(train_argv(syn, tmp_path / "run", max_iters=2, extra=[
        "--perform_validation_every", "2"]))).run()
    head = tmp_path / "head"
    head.mkdir()
    shutil.copy(tmp_path / "run" / "model.pth", head / "model.pt")
    shutil.copy(tmp_path / "run" / infos_name("t"), head / "infos.pkl")
    assert find_model_file(head).name == "model.pt" and find_infos(head, "other").name == "infos.pkl"
    resumed = Trainer(parse_train_opt(train_argv(syn, tmp_path / "run2", max_iters=3, extra=[
        "--start_from", str(head), "--load_best_score", "0"])))
    assert resumed.iteration == 2 and resumed.best_val_score is None
    assert resumed.optimizer._step == 2  # 9.8: the Noam step comes from the iteration


def test_metric_and_plot_code_is_imported_lazily():
    """9.17: importing the training/eval modules pulls in neither pycocoevalcap nor matplotlib."""
    code = ("import sys, spatial_captioning.rewards, spatial_captioning.evaluation, spatial_captioning.training; "
            "bad = [m for m in ('pycocoevalcap', 'matplotlib', 'torchvision') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_language_eval_drops_unknown_images_only_when_asked(syn, capsys):
    """9.23: the original drops predictions whose image is not in the annotation file (--drop_unreferenced 1);
    by default such a prediction is an error that blames the predictions, not the references."""
    preds = [{"image_id": 451, "caption": "a cat at the top left"}, {"image_id": 999999, "caption": "a dog"}]
    overall, per_image = language_eval(preds, syn["ann_file"], ("CIDEr",), drop_unreferenced=True)
    assert "Using 1/2 predictions" in capsys.readouterr().out
    assert set(per_image) == {451} and "CIDEr" in overall
    with pytest.raises(InputError) as err:
        language_eval(preds, syn["ann_file"], ("CIDEr",), source="predictions of test")
    assert err.value.file == "predictions of test" and err.value.record == 999999 and err.value.field == "image_id"
    with pytest.raises(InputError, match="0/1 predictions"):
        language_eval(preds[1:], syn["ann_file"], ("CIDEr",), drop_unreferenced=True)


def test_low_temperature_sampling_is_greedy_and_sampling_keeps_gradients():
    """9.13: exp(logp / T) is fed unnormalised to multinomial; T -> 0 gives the argmax. SCST needs the graph."""
    torch.manual_seed(0)
    model = setup(load_config("tiny", vocab_size=20)).eval()
    with torch.no_grad():
        model.model.generator.proj.weight *= 10  # peaked distributions: exp(logp / T) stays representable
    feats, boxes = torch.randn(3, 5, 32), torch.rand(3, 5, 36)
    greedy, _ = model(feats, None, boxes, opt={"sample_max": 1}, mode="sample")
    cold, _ = model(feats, None, boxes, opt={"sample_max": 0, "temperature": 0.05}, mode="sample")
    assert torch.equal(greedy, cold)
    model.train()
    _, lp = model(feats, None, boxes, opt={"sample_max": 0}, mode="sample")
    assert lp.requires_grad


def test_scheduled_sampling_is_used_by_show_tell_only(syn, tmp_path):
    """9.9: ORT's `start >= 0` condition; ss_prob grows per epoch and the transformer ignores it."""
    argv = train_argv(syn, tmp_path / "ss", "show_tell", 60, [
        "--scheduled_sampling_start", "0", "--scheduled_sampling_increase_every", "1",
        "--scheduled_sampling_increase_prob", "0.1", "--noamopt"])
    argv.remove("--noamopt")  # show_tell trains with plain Adam
    argv.remove("--noamopt")
    trainer = Trainer(parse_train_opt(argv))
    trainer.run()
    assert trainer.epoch == 1 and abs(trainer.model.ss_prob - 0.1) < 1e-9


def test_ensemble_of_one_equals_the_model_and_eval_ensemble_runs(syn, tmp_path):
    """9.27: the ensemble is reimplemented simply: log(mean softmax) over models with their own encoders."""
    from spatial_captioning import eval_ensemble
    from spatial_captioning.models.ensemble import EnsembleModel

    for rid in ("a", "b"):
        argv = train_argv(syn, tmp_path / "checkpoints" / rid, max_iters=2, extra=["--perform_validation_every", "2"])
        argv[argv.index("--id") + 1] = rid
        Trainer(parse_train_opt(argv)).run()
    torch.manual_seed(0)
    model = setup(load_config("tiny", vocab_size=20)).eval()
    feats, boxes = torch.randn(2, 5, 32), torch.rand(2, 5, 36)
    single, _ = model(feats, None, boxes, opt={"beam_size": 2}, mode="sample")
    ens, _ = EnsembleModel([model]).eval()(feats, None, boxes, opt={"beam_size": 2}, mode="sample")
    assert torch.equal(single, ens)
    rc = eval_ensemble.main(["--ids", "a", "b", "--checkpoint_root", str(tmp_path / "checkpoints"), "--device", "cpu",
                             "--num_images", "4", "--vis_dir", str(tmp_path / "vis"), "--language_eval", "1",
                             "--lang_metrics", "CIDEr", "--ann_file", str(syn["ann_file"]),
                             "--eval_results_dir", str(tmp_path / "res"), "--seq_length", "10"])
    assert rc == 0 and (tmp_path / "res" / "a_b_test.json").is_file()


def test_ort_box_geometry_keeps_the_plus_one_on_width_and_height():
    """Spec 9.18 (K): ORT adds 1 to relative box w/h before the log-ratios; pinned with hand values."""
    from spatial_captioning.models.relation_transformer import box_relational_embedding

    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 1.0, 0.5]]])
    geometry = box_relational_embedding(boxes, trignometric_embedding=False)
    assert geometry.shape == (1, 2, 2, 4)
    # w = h = 0.5 + 1 for both boxes; |cx_0 - cx_1| = 0.5 -> log(0.5 / 1.5); cy equal -> log(1e-3) clamp.
    expected_dx = torch.log(torch.tensor(0.5 / 1.5))
    assert torch.allclose(geometry[0, 0, 1, 0], expected_dx)
    assert torch.allclose(geometry[0, 0, 1, 1], torch.log(torch.tensor(1e-3)))
    assert torch.allclose(geometry[0, :, :, 2:], torch.zeros(2, 2, 2))
    # without the +1 the x term would be log(0.5 / 0.5) = 0
    assert abs(geometry[0, 0, 1, 0].item()) > 1.0
