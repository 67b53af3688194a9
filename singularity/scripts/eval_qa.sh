#!/usr/bin/env bash
# eval_qa.sh: the name the original README uses (the original repo only had eval_vqa.sh); same arguments.
# Usage: bash scripts/eval_qa.sh DATASET CKPT_PATH SAVE_DIRNAME MODE NGPU [key=value ...]   (MODE before NGPU, as the original)
#SBATCH --partition=<your_partition>
#SBATCH --nodes=1
#SBATCH --gres=gpu:1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=10
#SBATCH --time=4:00:00
#SBATCH --mem=100G
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/eval_vqa.sh" "$@"
