#!/usr/bin/env bash
# Stage 2 on CLEVR-Change, 2 processes (README: CIDEr 1.5039).
# Run from clip4idc/ (as the original README). DATA_PATH overrides the data root; extra flags are appended.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_PATH=${DATA_PATH:-your_data/clevr_change/data}
torchrun --nproc_per_node=2 --master_port=5558 main_task_caption.py \
  --do_train --epochs=50 --batch_size=64 --batch_size_val 64 --datatype clevr --data_path "$DATA_PATH" --features_path "$DATA_PATH" --output_dir ckpts/ckpt_clevr_caption_multigpu --init_model ckpts/pretrained/pytorch_model.bin.clevr --seed 2021 \
  --num_thread_reader=4 --n_display=50 --lr 1e-4 --max_words 32 --coef_lr 1e-3 --freeze_layer_num 0 --linear_patch 2d --pretrained_clip_name ViT-B/32 "$@"
