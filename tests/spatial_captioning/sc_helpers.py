"""Shared helpers of the spatial_captioning tests: tiny training options on the synthetic set."""
from __future__ import annotations

from pathlib import Path

import torch

from spatial_captioning.data import DataLoader
from spatial_captioning.evaluation import eval_split
from spatial_captioning.opts import parse_train_opt
from spatial_captioning.synthetic import word_accuracy
from spatial_captioning.training import Trainer

TINY = ["--num_layers", "1", "--input_encoding_size", "64", "--ff_size", "128", "--heads", "4", "--img_feat_size",
        "32", "--num_grids", "36", "--dropout", "0.1", "--device", "cpu", "--seed", "0", "--cache_features", "1"]


# Noam warm-up 50 as spec 10.2, but factor 0.5: at E=64 factor 1 peaks at 64^-0.5 * 50^-0.5 = 1.8e-2, which sends
# most seeds into the class-only plateau (position words at chance, loss ~0.45). Factor 0.5 (peak 8.8e-3) learns
# class and both position words on every seed 0-4 by 200 iterations (measured; see spatial_captioning/README.md).
NOAM = ["--noamopt", "--noamopt_warmup", "50", "--noamopt_factor", "0.5"]


def train_argv(paths: dict, ckpt: Path, caption_model: str = "spatial_pe", max_iters: int = 200,
               extra: list[str] | None = None) -> list[str]:
    """train.py arguments for the spec 10.2 tiny configuration."""
    return ["--id", "t", "--caption_model", caption_model, "--input_json", str(paths["input_json"]),
            "--input_img_feat_dir", str(paths["input_img_feat_dir"]),
            "--input_grid_vec_dir", str(paths["input_grid_vec_dir"]),
            "--input_rel_box_dir", str(paths["input_rel_box_dir"]),
            "--input_fc_feat_dir", str(paths["input_fc_feat_dir"]),
            "--input_label_h5", str(paths["input_label_h5"]), "--checkpoint_path", str(ckpt),
            "--cached_tokens", str(paths["cached_tokens"]), "--ann_file", str(paths["ann_file"]),
            *NOAM, "--batch_size", "8", "--seq_per_img", "5",
            "--max_iters", str(max_iters), "--save_checkpoint_every", str(max_iters),
            "--perform_validation_every", "100000", "--val_images_use", "50", "--losses_log_every", "25",
            *TINY, *(extra or [])]


def train_and_score(syn: dict, ckpt, caption_model: str, iters: int, extra=None) -> dict:
    """Train the tiny model, decode the 50 val images greedily, return accuracies, CIDEr and the trainer."""
    trainer = Trainer(parse_train_opt(train_argv(syn, ckpt, caption_model, iters, extra)))
    first_loss = None
    batch = next(iter(DataLoader(trainer.opt, "train")))
    with torch.no_grad():
        trainer.model.eval()
        first_loss, _ = trainer.xe_step(batch)
    trainer.run()
    val = DataLoader(trainer.opt, "val", length=50)
    kwargs = dict(vars(trainer.opt), verbose=0, verbose_beam=0, language_eval=1, lang_metrics=["CIDEr"])
    loss, preds, lang, _ = eval_split(trainer.model, trainer.crit, val, kwargs)
    acc = word_accuracy({p["image_id"]: p["caption"] for p in preds}, syn["dataset_json"])
    return {"trainer": trainer, "first_loss": float(first_loss), "val_loss": loss, "cider": lang["CIDEr"],
            "predictions": {p["image_id"]: p["caption"] for p in preds}, **acc}
