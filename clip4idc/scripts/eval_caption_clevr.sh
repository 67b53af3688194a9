#!/usr/bin/env bash
# Evaluate the released CLEVR captioner (README: CIDEr 1.5075, BLEU-4 0.5687), with per-change-type scores.
# Run from clip4idc/ (as the original README). DATA_PATH overrides the data root; extra flags are appended.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_PATH=${DATA_PATH:-your_data/clevr_change/data}
torchrun --nproc_per_node=1 --master_port=5557 main_task_caption.py \
  --do_eval --epochs=50 --batch_size=16 --batch_size_val 32 --datatype clevr --data_path "$DATA_PATH" --features_path "$DATA_PATH" --output_dir ckpts/ckpt_clevr_caption_eval --init_model ckpts/trained/pytorch_model.bin.clevr \
  --num_thread_reader=4 --n_display=50 --lr 1e-4 --max_words 32 --coef_lr 1e-3 --freeze_layer_num 0 --linear_patch 2d --pretrained_clip_name ViT-B/32 "$@"
