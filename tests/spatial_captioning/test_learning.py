"""Learning test (spec 10.2): the grid path makes position words learnable; the ablation stays at chance."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from sc_helpers import train_and_score, train_argv
from spatial_captioning.captions import reward_string
from spatial_captioning.data import DataLoader, model_inputs
from spatial_captioning.evaluation import language_eval
from spatial_captioning.opts import parse_train_opt
from spatial_captioning.synthetic import HORIZONTAL, VERTICAL, truth
from spatial_captioning.training import Trainer


@pytest.fixture(scope="module")
def spatial(syn, tmp_path_factory):
    return train_and_score(syn, tmp_path_factory.mktemp("sp"), "spatial_pe", 200)


@pytest.fixture(scope="module")
def ablation(syn, tmp_path_factory):
    return train_and_score(syn, tmp_path_factory.mktemp("ab"), "transformer", 200)


def test_spatial_pe_learns_class_and_position(spatial):
    print({k: v for k, v in spatial.items() if k != "trainer"})
    assert spatial["class_acc"] >= 0.9
    assert spatial["vertical_acc"] >= 0.8
    assert spatial["horizontal_acc"] >= 0.8
    assert spatial["val_loss"] < 0.4 * spatial["first_loss"]


def test_ablation_without_grid_stays_at_chance_on_position(ablation):
    print({k: v for k, v in ablation.items() if k != "trainer"})
    assert ablation["class_acc"] >= 0.9
    assert ablation["position_acc"] <= 0.6


def test_cider_with_grid_beats_ablation(spatial, ablation):
    # Spec 10.2 asks for > 2x; on this data set no captioner can reach it against a chance-position ablation
    # (see test_cider_2x_is_beyond_a_perfect_captioner). Measured over seeds 0-4 at 200 its: spatial_pe
    # 5.63-6.54 vs ablation 2.84-3.57 (ratio 1.71-1.98). The normalised test below carries the spec's intent.
    assert spatial["cider"] > 1.0
    assert spatial["cider"] > 1.5 * ablation["cider"]


def _position_oracles(predictions: dict[int, str], dataset_json, draws: int = 20) -> tuple[dict, list[dict]]:
    """The same captions with the true position words, and with uniformly random ones (``draws`` times)."""
    gt = truth(dataset_json)
    rng = random.Random(0)

    def swap(caption: str, v: str, h: str) -> str:
        return " ".join(v if w in VERTICAL else h if w in HORIZONTAL else w for w in caption.split())

    perfect = {i: swap(c, gt[i]["vertical"], gt[i]["horizontal"]) for i, c in predictions.items()}
    chance = [{i: swap(c, rng.choice(VERTICAL), rng.choice(HORIZONTAL)) for i, c in predictions.items()}
              for _ in range(draws)]
    return perfect, chance


def _cider(predictions: dict[int, str], ann_file) -> float:
    return language_eval([{"image_id": i, "caption": c} for i, c in predictions.items()], ann_file,
                         metrics=("CIDEr",), verbose=False)[0]["CIDEr"]


def test_cider_2x_is_beyond_a_perfect_captioner(spatial, syn):
    """Spec 10.2's "> 2x the ablation" cannot hold here: take spatial_pe's own captions, put the true position words
    in (a perfect captioner) or random ones (an ablation at chance on position, right on everything else): the
    perfect/chance CIDEr-D ratio stays below 2 because the class and template n-grams score for both."""
    perfect, chance = _position_oracles(spatial["predictions"], syn["dataset_json"])
    top = _cider(perfect, syn["ann_file"])
    floor = float(np.mean([_cider(c, syn["ann_file"]) for c in chance]))
    ratio = top / floor
    print({"perfect": top, "chance_position": floor, "ratio": ratio})
    assert ratio < 2.0  # the spec's bar is out of reach even for a perfect captioner
    assert ratio > 1.5  # and the position words do carry a real share of CIDEr-D


def test_grid_recovers_the_position_share_of_cider(spatial, ablation, syn):
    """Spec 10.2's CIDEr claim in a form the data allows: the share of the position-attributable CIDEr-D gap
    (chance-position captions -> perfect captions, built from each model's own captions) that the model recovers.
    spatial_pe recovers most of it; the no-grid ablation stays near zero."""
    shares = {}
    for name, run in (("spatial_pe", spatial), ("ablation", ablation)):
        perfect, chance = _position_oracles(run["predictions"], syn["dataset_json"])
        top = _cider(perfect, syn["ann_file"])
        floor = float(np.mean([_cider(c, syn["ann_file"]) for c in chance]))
        shares[name] = (run["cider"] - floor) / (top - floor)
    print(shares)
    assert shares["spatial_pe"] >= 0.8
    assert shares["ablation"] <= 0.3


def test_beam_search_improves_logprob_and_beam1_equals_greedy(spatial):
    model = spatial["trainer"].model.eval()
    val = DataLoader(spatial["trainer"].opt, "val", length=50)
    s = val.get_seq_per_img()
    better, total = 0, 0
    with torch.no_grad():
        for batch in val:
            feats, masks, boxes = model_inputs(batch)
            rows = torch.arange(0, feats.size(0), s)
            f, m, b = feats[rows], None if masks is None else masks[rows], None if boxes is None else boxes[rows]
            greedy, greedy_lp = model(f, m, b, opt={"sample_max": 1}, mode="sample")
            beam, beam_lp = model(f, m, b, opt={"beam_size": 3}, mode="sample")
            for i in range(len(rows)):
                g_len = int((greedy[i] > 0).sum()) + 1
                b_len = int((beam[i] > 0).sum()) + 1
                g_score = float(greedy_lp[i, :g_len].sum())
                b_score = float(beam_lp[i, :b_len].sum())
                better += b_score >= g_score - 1e-5
                total += 1
                ends = (beam[i] == 0).any() or (beam[i] > 0).all()
                assert ends
            one, one_lp = model.beam_search(f, m, b, {"beam_size": 1})
            assert torch.equal(one, greedy)
            lengths = (greedy > 0).sum(1) + 1
            for i in range(len(rows)):
                n = min(int(lengths[i]), greedy.size(1))
                assert torch.allclose(one_lp[i, :n], greedy_lp[i, :n], atol=1e-5)
    assert better / total >= 0.95


def test_scst_smoke_keeps_greedy_cider(spatial, syn, tmp_path):
    """20 SCST iterations from the XE model: finite rewards/loss, train-batch greedy CIDEr-D drops <= 10%."""
    xe = spatial["trainer"]
    start = xe.iteration
    opt = parse_train_opt(train_argv(syn, xe.opt.checkpoint_path, "spatial_pe", start + 20,
                                     ["--start_from", str(xe.opt.checkpoint_path), "--self_critical_after", "0",
                                      "--learning_rate", "1e-5", "--save_checkpoint_every", "1000", "--optim", "adam"]))
    opt.noamopt = False
    opt.checkpoint_path = str(tmp_path)
    trainer = Trainer(opt)
    batch = next(iter(DataLoader(opt, "train")))

    def greedy_cider() -> float:
        model = trainer.model.eval()
        feats, masks, boxes = model_inputs(batch)
        with torch.no_grad():
            seq, _ = model(feats, masks, boxes, mode="sample")
        trainer.model.train()
        cands = [reward_string(r) for r in seq.numpy()]
        refs = [[reward_string(r) for r in batch["gts"][i // opt.seq_per_img]] for i in range(len(cands))]
        return trainer.cider_scorer.compute_score(cands, refs)[0]

    before = greedy_cider()
    losses = []
    for i, b in enumerate(trainer.loader):
        trainer.optimizer.zero_grad()
        loss, stats = trainer.scst_step(b)
        assert math.isfinite(float(loss.detach())) and math.isfinite(stats["avg_reward"])
        loss.backward()
        trainer.optimizer.step()
        losses.append(float(loss.detach()))
        if i == 19:
            break
    after = greedy_cider()
    assert np.isfinite(losses).all()
    assert after >= 0.9 * before
