#!/usr/bin/env bash
# Runs scripts/train.py on every worker of a TPU at once: one JAX process per host.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"

usage() {
  cat <<EOF
Usage: $PROG [options] --output-dir DIR [-- train.py flags]

Starts 'python3 scripts/train.py --output-dir DIR [--resume] [train.py flags]' in REMOTE_DIR
on all workers together ('gcloud compute tpus tpu-vm ssh --worker=all'). JAX finds the other
hosts from the TPU metadata (train.py's default --distributed auto). Each worker appends its
output to LOG_DIR/train-<hostname>.log; the exit status is non-zero when any worker fails.

$TPU_FLAGS_HELP
  --output-dir DIR      train.py's --output-dir: an absolute path on storage that every worker
                        shares (gcsfuse mount, NFS), since orbax checkpoints are written by all
                        hosts together (env OUTPUT_DIR; required)
  --resume              continue from the latest checkpoint in DIR (env RESUME=1)
  --kill-stale          first kill any scripts/train.py still running on the workers, which
                        would hold the TPU (env KILL_STALE=1)
  --remote-dir DIR      code directory on each worker (env REMOTE_DIR; default jmed)
  --log-dir DIR         log directory on each worker, relative to the home directory or
                        absolute (env REMOTE_LOG_DIR; default jmed-logs)
  --python PY           Python on the workers (env REMOTE_PYTHON; default python3)

Example:
  $PROG --tpu-name jmed-v4-32 --zone us-central2-b --output-dir /mnt/jmed/runs/resnet50 \\
    --dry-run -- --model resnet50 --dataset pneumoniamnist --batch-size 256 \\
    --eval-batch-size 512 --data-dir /mnt/jmed/data --checkpoint-every 200
EOF
}

VALUE_FLAGS=("${TPU_FLAGS[@]}" --output-dir:OUTPUT_DIR --remote-dir:REMOTE_DIR
             --log-dir:REMOTE_LOG_DIR --python:REMOTE_PYTHON)
SWITCH_FLAGS=(--resume:RESUME --kill-stale:KILL_STALE)

# check_train_args: train.py flags that this script sets itself must not come after --.
check_train_args() {
  local arg
  for arg in "${PASSTHROUGH[@]}"; do
    case $arg in
      --output-dir | --output-dir=*) die "give --output-dir before --, to $PROG itself" ;;
    esac
  done
}

# log_path: the workers' log directory as a remote shell word ($HOME expands there).
log_path() {
  local dir=$REMOTE_LOG_DIR
  if [[ $dir == /* ]]; then
    printf '%s' "$(quote "$dir")"
  else
    printf '%s/%s' "\"\$HOME\"" "$(quote "$dir")"
  fi
}

# train_command: the shell line each worker runs.
train_command() {
  local train=("$REMOTE_PYTHON" scripts/train.py --output-dir "$OUTPUT_DIR")
  if is_true "${RESUME:-}"; then
    train+=(--resume)
  fi
  train+=("${PASSTHROUGH[@]}")
  local log
  log=$(log_path)
  printf '%s' "set -o pipefail; mkdir -p $log && cd $(quote "$REMOTE_DIR") && " \
    "PYTHONUNBUFFERED=1 $(quote_words "${train[@]}") 2>&1 | tee -a $log/train-\"\$(hostname)\".log"
}

main() {
  parse_flags "$@"
  require TPU_NAME:--tpu-name ZONE:--zone OUTPUT_DIR:--output-dir
  require_shared_output_dir workers
  check_train_args
  set_default REMOTE_DIR jmed
  set_default REMOTE_LOG_DIR jmed-logs
  set_default REMOTE_PYTHON python3
  if is_true "${KILL_STALE:-}"; then
    # The [s] keeps pkill from matching this very command line.
    on_all_workers "pkill -9 -f '[s]cripts/train[.]py' || true"
  fi
  on_all_workers "$(train_command)"
}

main "$@"
