"""Shared helpers of the spatial_captioning tests: tiny training options on the synthetic set."""
from __future__ import annotations

from pathlib import Path

TINY = ["--num_layers", "1", "--input_encoding_size", "64", "--ff_size", "128", "--heads", "4", "--img_feat_size",
        "32", "--num_grids", "36", "--dropout", "0.1", "--device", "cpu", "--seed", "0", "--cache_features", "1"]


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
            "--noamopt", "--noamopt_warmup", "50", "--batch_size", "8", "--seq_per_img", "5",
            "--max_iters", str(max_iters), "--save_checkpoint_every", str(max_iters),
            "--perform_validation_every", "100000", "--val_images_use", "50", "--losses_log_every", "25",
            *TINY, *(extra or [])]
