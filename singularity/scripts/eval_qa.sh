#!/usr/bin/env bash
# eval_qa.sh: the name the original README uses (the original repo only had eval_vqa.sh)
# Usage: bash scripts/eval_qa.sh DATASET CKPT_PATH SAVE_DIRNAME MODE NGPU [key=value ...]   (MODE before NGPU, as the original)
#   DATASET in {vqa, msrvtt, anet}; output: $(dirname CKPT_PATH)/SAVE_DIRNAME
#SBATCH --partition=<your_partition>
#SBATCH --nodes=1
#SBATCH --gres=gpu:1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=10
#SBATCH --time=4:00:00
#SBATCH --mem=100G
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/launch.sh"
[[ $# -ge 5 ]] || sl_die "Usage: bash scripts/eval_qa.sh DATASET CKPT_PATH SAVE_DIRNAME MODE NGPU [key=value ...]"
dataset=$1; pretrained_path=$2; save_dirname=$3; mode=$4; ngpus=$5
sl_check_choice "$dataset" dataset vqa msrvtt anet
sl_check_choice "$mode" mode local slurm
sl_check_int "$ngpus"
[[ -f "$pretrained_path" ]] || sl_die "pretrained_path ${pretrained_path} does not exist. Exit."
output_dir=$(dirname "$pretrained_path")/${save_dirname}
sl_prepare_output_dir "$output_dir"
sl_launch "$mode" "$ngpus" "$output_dir" vqa.py "qa_${dataset}.yaml" \
  "output_dir=${output_dir}" "pretrained_path=${pretrained_path}" evaluate=True "${@:6}"
