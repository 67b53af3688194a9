#!/usr/bin/env bash
# Usage: bash scripts/pretrain.sh EXP_NAME CORPUS NGPU MODE [key=value ...]
#   CORPUS in {coco_vg, coco, webvid_cc3m, cc3m, webvid, webvid_14m}; MODE in {local, slurm}
#   output: $SL_EXP_DIR/pt_${CORPUS}/${CORPUS}_${EXP_NAME}
#SBATCH --partition=<your_partition>
#SBATCH --nodes=1
#SBATCH --gres=gpu:3
#SBATCH --ntasks-per-node=3
#SBATCH --cpus-per-task=10
#SBATCH --time=48:00:00
#SBATCH --mem=200G
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/launch.sh"
[[ $# -ge 4 ]] || sl_die "Usage: bash scripts/pretrain.sh EXP_NAME CORPUS NGPU MODE [key=value ...]"
exp_name=$1; corpus=$2; ngpus=$3; mode=$4
sl_check_choice "$corpus" corpus coco_vg coco webvid_cc3m cc3m webvid webvid_14m
sl_check_choice "$mode" mode local slurm
sl_check_int "$ngpus"
[[ -n "${SL_EXP_DIR:-}" ]] || sl_die "SL_EXP_DIR is not set (experiments root)"
output_dir=${SL_EXP_DIR}/pt_${corpus}/${corpus}_${exp_name}
sl_prepare_output_dir "$output_dir"
sl_launch "$mode" "$ngpus" "$output_dir" pretrain.py pretrain.yaml \
  "output_dir=${output_dir}" "train_corpus=${corpus}" "wandb.project=sb_pt_${corpus}" \
  "wandb.enable=${WANDB_ENABLE:-False}" "${@:5}"
