#!/usr/bin/env bash
# Stage 2 on Spot-the-Diff. Fixed (spec 9.3): the original launched the retrieval script here.
# Run from clip4idc/ (as the original README). DATA_PATH overrides the data root; extra flags are appended.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_PATH=${DATA_PATH:-your_data/spot-the-diff}
torchrun --nproc_per_node=1 --master_port=5564 main_task_caption.py \
  --do_train --epochs=50 --batch_size=16 --batch_size_val 32 --datatype spot --data_path "$DATA_PATH" --features_path "${DATA_PATH}/images" --output_dir ckpts/ckpt_spot_caption --init_model ckpts/pretrained/pytorch_model.bin.spot \
  --num_thread_reader=4 --n_display=50 --lr 1e-4 --max_words 32 --coef_lr 1e-3 --freeze_layer_num 0 --linear_patch 2d --pretrained_clip_name ViT-B/32 "$@"
