"""LR multiplier (spec 5.2) and parameter groups (spec 5.1, pitfall 9.12 K)."""
import math

import pytest
import torch
from omegaconf import OmegaConf

from singularity.optim import create_optimizer, create_scheduler, lr_multiplier


def test_lr_multiplier_values():
    m = 0.1
    assert lr_multiplier(0, 10, 100, m) == m  # warmup starts at the floor, not 0
    assert lr_multiplier(5, 10, 100, m) == 0.5
    assert lr_multiplier(10, 10, 100, m) == 1.0  # warmup end
    assert lr_multiplier(55, 10, 100, m) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_multiplier(100, 10, 100, m) == m  # clipped at the floor
    assert lr_multiplier(0, 0, 100, m) == 1.0


def test_param_groups_decay_temp_not_bias(tiny_model_factory):
    model = tiny_model_factory("retrieval")
    cfg = OmegaConf.create({"optimizer": {"opt": "adamW", "lr": 1e-3, "weight_decay": 0.02, "opt_betas": [0.9, 0.999],
                                          "different_lr": {"enable": True, "module_names": ["itm_head"], "lr": 5e-3}},
                            "scheduler": {"sched": "cosine", "epochs": 2, "warmup_epochs": 0.5, "min_lr_multi": 0.1}})
    opt = create_optimizer(model, cfg)
    groups = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert groups[id(model.temp)]["weight_decay"] == 0.02  # 0-d tensor is decayed (kept)
    assert groups[id(model.temporal_embeddings)]["weight_decay"] == 0.02
    assert groups[id(model.vision_proj.bias)]["weight_decay"] == 0.0
    assert groups[id(model.vision_layernorm.weight)]["weight_decay"] == 0.0
    assert groups[id(model.itm_head.weight)]["lr"] == 5e-3
    sched = create_scheduler(opt, cfg, steps_per_epoch=10)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * opt.param_groups[0]["initial_lr"])
    with pytest.raises(ValueError, match="momentum"):
        create_optimizer(model, OmegaConf.merge(cfg, {"optimizer": {"opt": "sgd"}}))
    with pytest.raises(ValueError, match="cosine"):
        create_scheduler(opt, OmegaConf.merge(cfg, {"scheduler": {"sched": "step"}}), 10)
    assert isinstance(sched, torch.optim.lr_scheduler.LambdaLR)
