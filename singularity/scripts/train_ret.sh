#!/usr/bin/env bash
# Usage: bash scripts/train_ret.sh EXP_NAME DATASET NGPU MODE [key=value ...]   (e.g. pretrained_path=...)
#   DATASET in {coco, flickr, msrvtt, didemo, anet, ssv2_label, ssv2_template}; MODE in {local, slurm}
#   output: $SL_EXP_DIR/ret_${DATASET}/${DATASET}_${EXP_NAME}
#SBATCH --partition=<your_partition>
#SBATCH --nodes=1
#SBATCH --gres=gpu:1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=10
#SBATCH --time=24:00:00
#SBATCH --mem=100G
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/launch.sh"
[[ $# -ge 4 ]] || sl_die "Usage: bash scripts/train_ret.sh EXP_NAME DATASET NGPU MODE [key=value ...]"
exp_name=$1; dataset=$2; ngpus=$3; mode=$4
sl_check_choice "$dataset" dataset coco flickr msrvtt didemo anet ssv2_label ssv2_template
sl_check_choice "$mode" mode local slurm
sl_check_int "$ngpus"
[[ -n "${SL_EXP_DIR:-}" ]] || sl_die "SL_EXP_DIR is not set (experiments root)"
output_dir=${SL_EXP_DIR}/ret_${dataset}/${dataset}_${exp_name}
sl_prepare_output_dir "$output_dir"
sl_launch "$mode" "$ngpus" "$output_dir" retrieval.py "ret_${dataset}.yaml" \
  "output_dir=${output_dir}" "wandb.project=sb_ret_${dataset}" "wandb.enable=${WANDB_ENABLE:-False}" "${@:5}"
