"""ITC targets, ITM negatives (safe), MLM masking, temperature clamp (spec 4.4, pitfalls 9.7/9.11)."""
import torch
from torch.nn import functional as F

from singularity.models.singularity import itc_loss, mask_tokens, sample_negatives


def test_itc_targets_with_duplicate_ids():
    sim = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    idx = torch.tensor([7, 7, 9])
    targets = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    expected_i2t = -(F.log_softmax(sim, 1) * targets).sum(1).mean()
    expected_t2i = -(F.log_softmax(sim.t(), 1) * targets).sum(1).mean()
    assert torch.allclose(itc_loss(sim, sim.t(), idx), (expected_i2t + expected_t2i) / 2)


def test_negatives_never_positive_and_edge_cases():
    torch.manual_seed(0)
    idx = torch.tensor([0, 0, 1, 2, 2, 3])
    sim = torch.randn(6, 6) * 5
    for hard in (True, False):
        for _ in range(30):
            cols, rows = sample_negatives(sim, idx, hard)
            assert rows.tolist() == list(range(6))
            assert all(idx[c] != idx[r] for c, r in zip(cols.tolist(), rows.tolist()))
    # all items share one match id: no negative exists -> rows left out instead of crashing (9.7 F)
    cols, rows = sample_negatives(torch.randn(4, 4), torch.zeros(4, dtype=torch.long), True)
    assert cols.numel() == 0 and rows.numel() == 0
    cols, rows = sample_negatives(torch.randn(1, 1), torch.zeros(1, dtype=torch.long), True)  # B = 1
    assert rows.numel() == 0
    # softmax underflow on every negative falls back to uniform over the negatives
    sim = torch.tensor([[1e4, -1e4], [-1e4, 1e4]])
    cols, rows = sample_negatives(sim, torch.tensor([0, 1]), True)
    assert cols.tolist() == [1, 0]


def test_itm_label_layout_and_batch_without_negatives(tiny_model_factory):
    model = tiny_model_factory("retrieval")
    captured = {}
    original = model.itm_logits

    def spy(text, mask, image):
        out = original(text, mask, image)
        captured["n"] = out.shape[0]
        return out
    model.itm_logits = spy
    img = torch.randn(4, 1, 3, 32, 32)
    text = {"input_ids": torch.randint(5, 30, (4, 6)), "attention_mask": torch.ones(4, 6, dtype=torch.long)}
    losses = model(img, text, torch.tensor([0, 1, 2, 3]))
    assert captured["n"] == 12  # [1]*B + [0]*2B
    losses = model(img, text, torch.zeros(4, dtype=torch.long))
    assert captured["n"] == 4 and torch.isfinite(losses["loss_itm"])
    model.temp.data.fill_(5.0)
    model(img, text, torch.tensor([0, 1, 2, 3]))
    assert float(model.temp.detach()) == 0.5  # clamped into [0.001, 0.5] at every forward


def test_mlm_masking_rules():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 60, (64, 20))
    ids[:, 0] = 2
    ids[:, 15:] = 0
    masked, labels = mask_tokens(ids, 64, 0.5, pad_id=0, cls_id=2, mask_id=4, generator=g)
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[:, 15:].any()
    frac = chosen[:, 1:15].float().mean()
    assert 0.4 < frac < 0.6  # mlm_prob 0.5, not 0.15 (9.11 K)
    assert torch.equal(labels[chosen], ids[chosen])
    to_mask = (masked[chosen] == 4).float().mean()
    assert 0.7 < to_mask < 0.9
    assert torch.equal(masked[~chosen], ids[~chosen])
