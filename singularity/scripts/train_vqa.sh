#!/usr/bin/env bash
# Usage: bash scripts/train_vqa.sh EXP_NAME DATASET NGPU MODE [key=value ...]
#   DATASET in {vqa, msrvtt, anet}; MODE in {local, slurm}; output: $SL_EXP_DIR/qa_${DATASET}/${EXP_NAME}
#SBATCH --partition=<your_partition>
#SBATCH --nodes=1
#SBATCH --gres=gpu:1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=10
#SBATCH --time=24:00:00
#SBATCH --mem=100G
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/launch.sh"
[[ $# -ge 4 ]] || sl_die "Usage: bash scripts/train_vqa.sh EXP_NAME DATASET NGPU MODE [key=value ...]"
exp_name=$1; dataset=$2; ngpus=$3; mode=$4
sl_check_choice "$dataset" dataset vqa msrvtt anet
sl_check_choice "$mode" mode local slurm
sl_check_int "$ngpus"
[[ -n "${SL_EXP_DIR:-}" ]] || sl_die "SL_EXP_DIR is not set (experiments root)"
output_dir=${SL_EXP_DIR}/qa_${dataset}/${exp_name}
sl_prepare_output_dir "$output_dir"
sl_launch "$mode" "$ngpus" "$output_dir" vqa.py "qa_${dataset}.yaml" \
  "output_dir=${output_dir}" "wandb.project=sb_qa_${dataset}" "wandb.enable=${WANDB_ENABLE:-False}" "${@:5}"
