#!/usr/bin/env bash
# Shared by the task scripts (sourced): validation helpers and the local (torchrun) / slurm (srun) launch.
# SL_DRY_RUN=1 prints the launch command instead of running it (and creates nothing). SL_CODE_SNAPSHOT=1 copies the package into
# $output_dir/code (the original rsync'ed a directory that had to be named `singularity`; pitfall 9.15 F).
# wandb is off unless WANDB_ENABLE=True (the original forced it on; pitfall 9.14 F).

SL_PKG_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SL_REPO_DIR=$(dirname "${SL_PKG_DIR}")

sl_die() { echo "$1"; exit 1; }

sl_check_choice() {  # value name choices...
  local value=$1 name=$2; shift 2
  for c in "$@"; do [[ "$value" == "$c" ]] && return 0; done
  sl_die "Does not support ${name} ${value}; choose one of: $*"
}

sl_check_int() { [[ "$1" =~ ^[0-9]+$ ]] || sl_die "NGPU must be a positive integer, got '$1'"; }

sl_results_in() {  # dir -> prints the entries that are results (anything but code/ and slurm* logs, spec 2.3)
  find "$1" -mindepth 1 -maxdepth 1 ! -name code ! -name '*slurm*' -printf '%f\n' 2>/dev/null
}

SL_MADE_DIR=""
sl_prepare_output_dir() {  # output_dir
  # a directory left by a failed launch (only code/ and slurm logs) does not block the retry (issue 11)
  if [[ -e "$1" && ! -d "$1" ]]; then sl_die "$1 exists and is not a directory. Exit."; fi
  if [[ -d "$1" && -n "$(sl_results_in "$1")" ]]; then sl_die "Dir $1 already exist. Exit."; fi
  if [[ "${SL_DRY_RUN:-0}" == "1" ]]; then
    [[ -d "$1" ]] || echo "dry run: would create $1 (not created)" >&2
    return 0
  fi
  [[ -d "$1" ]] || SL_MADE_DIR=$1
  mkdir -p "$1"
  if [[ "${SL_CODE_SNAPSHOT:-0}" == "1" ]]; then
    mkdir -p "$1/code"
    (cd "${SL_PKG_DIR}" && tar --exclude='*.out' --exclude='__pycache__' -cf - .) | (cd "$1/code" && tar -xf -)
  fi
}

sl_cleanup_failed_launch() {  # output_dir: remove what this script made if the run left nothing else there
  local dir=$1
  [[ -n "$SL_MADE_DIR" && "$SL_MADE_DIR" == "$dir" && -d "$dir" ]] || return 0
  if [[ -z "$(find "$dir" -mindepth 1 -maxdepth 1 ! -name code -print -quit)" ]]; then
    rm -rf -- "$dir/code"
    rmdir -- "$dir"
    echo "launch failed: removed the output dir it had created (${dir})"
  fi
}

sl_launch() {  # mode ngpu output_dir entry config overrides...
  local mode=$1 ngpu=$2 output_dir=$3 entry=$4 config=$5; shift 5
  local port=${MASTER_PORT:-40000}
  local cmd
  if [[ "$mode" == "local" ]]; then
    cmd=(torchrun --nnodes=1 "--nproc_per_node=${ngpu}" --rdzv_backend=c10d
         "--rdzv_endpoint=${HOSTNAME:-localhost}:${port}" "${SL_PKG_DIR}/tasks/${entry}" "${SL_PKG_DIR}/configs/${config}" "$@")
  else
    [[ -n "${SLURM_JOB_NODELIST:-}" ]] || sl_die "slurm mode must run inside a Slurm allocation (sbatch); SLURM_JOB_NODELIST is unset"
    local nodelist=${SLURM_JOB_NODELIST} first_node
    if [[ "$nodelist" =~ ^([^,\[]+)\[([0-9]+) ]]; then  # node[3-5,7] -> node3
      first_node="${BASH_REMATCH[1]}${BASH_REMATCH[2]}"
    else
      first_node=${nodelist%%,*}
    fi
    cmd=(srun "--output=${output_dir}/slurm%j.out" "--error=${output_dir}/slurm%j.err" python
         "${SL_PKG_DIR}/tasks/${entry}" "${SL_PKG_DIR}/configs/${config}" "$@" "dist_url=tcp://${first_node}:${port}")
  fi
  if [[ "${SL_DRY_RUN:-0}" == "1" ]]; then
    printf '%q ' "${cmd[@]}"; echo
    return 0
  fi
  local status=0
  PYTHONPATH="${SL_REPO_DIR}:${PYTHONPATH:-}" "${cmd[@]}" || status=$?
  if [[ $status -ne 0 ]]; then
    sl_cleanup_failed_launch "$output_dir"
    exit "$status"
  fi
}
