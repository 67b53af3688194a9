"""transformers 2.4.1's AdamW update rule (issue 12 item 5), checked against a hand-computed two-step update."""
from __future__ import annotations

import pytest
import torch

from visualcomet.optim import OriginalAdamW

LR, EPS, WD = 0.1, 1e-8, 0.01  # betas (0.9, 0.999)


def _two_steps(opt_cls, **kwargs) -> list[torch.Tensor]:
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = opt_cls([p], lr=LR, eps=EPS, weight_decay=WD, **kwargs)
    out = []
    for g in ([0.5, 1e-7], [-0.25, 1e-7]):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        out.append(p.detach().clone())
    return out


def test_two_step_update_by_hand():
    # element 0, step 1: m = 0.1*0.5 = 0.05, v = 0.001*0.25 = 2.5e-4, step_size = 0.1*sqrt(0.001)/0.1 = 0.0316228,
    #   p = 1 - 0.0316228*0.05/(0.0158114 + 1e-8) = 0.90000006, then p -= 0.1*0.01*p -> 0.89910006
    # element 1, step 1: m = 1e-8, v = 1e-17, p = -2 - 0.0316228*1e-8/(3.16228e-9 + 1e-8) = -2.0240253,
    #   then * (1 - 0.001) -> -2.0220013
    # step 2: m = 0.9*m + 0.1*g, v = 0.999*v + 0.001*g^2, step_size = 0.1*sqrt(1 - 0.999^2)/(1 - 0.9^2)
    step1, step2 = _two_steps(OriginalAdamW)
    assert step1.tolist() == pytest.approx([0.8991000631822677, -2.022001282027869], abs=1e-12)
    assert step2.tolist() == pytest.approx([0.8715939079142588, -2.0508447446058637], abs=1e-12)


def test_differs_from_torch_adamw_for_tiny_gradients():
    ours, theirs = _two_steps(OriginalAdamW)[0], _two_steps(torch.optim.AdamW)[0]
    # ordinary gradients: the same Adam step; torch decays before it, the original after (lr*wd*0.1 = 1e-4 apart)
    assert ours[0].item() - theirs[0].item() == pytest.approx(LR * WD * 0.1, abs=1e-6)
    # a 1e-7 gradient moves torch's weights ~0.91*lr, the original's ~0.24*lr (eps before bias correction)
    assert abs(ours[1].item() - theirs[1].item()) > 0.6 * LR


def test_no_bias_correction_and_run_finetuning_default():
    p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = OriginalAdamW([p], lr=LR, eps=EPS, correct_bias=False)
    p.grad = torch.tensor([0.5], dtype=torch.float64)
    opt.step()
    assert p.item() == pytest.approx(1 - LR * 0.05 / (0.0158113883008419 + EPS), abs=1e-12)

    from visualcomet.scripts.run_finetuning import build_parser
    from visualcomet.training import build_optimizer

    base = ["--data_dir", "-", "--output_dir", "-", "--weight_decay", "0.01"]
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, build_parser().parse_args(base))
    assert type(opt) is OriginalAdamW and [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert type(build_optimizer(model, build_parser().parse_args(base + ["--adamw", "torch"]))) is torch.optim.AdamW
