#!/usr/bin/env bash
# Stage 1 (IDC adaptation) on Spot-the-Diff, 2 processes.
# Run from clip4idc/ (as the original README). DATA_PATH overrides the data root; extra flags are appended.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_PATH=${DATA_PATH:-your_data/spot-the-diff/download}
torchrun --nproc_per_node=2 --master_port=6666 main_task_retrieval.py \
  --do_train --epochs=20 --batch_size=128 --batch_size_val 128 --datatype spot --data_path "$DATA_PATH" --features_path "${DATA_PATH}/images" --output_dir ckpts/ckpt_spot_retrieval \
  --num_thread_reader=4 --n_display=50 --lr 1e-4 --max_words 32 --coef_lr 1e-3 --freeze_layer_num 0 --linear_patch 2d --pretrained_clip_name ViT-B/32 "$@"
