#!/usr/bin/env bash
# Keeps a training run going through TPU preemptions: (re)creates the TPU when it is missing or
# preempted, reinstalls, and relaunches train.py with --resume until it exits 0.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"

usage() {
  cat <<EOF
Usage: $PROG [options] --output-dir DIR [-- train.py flags]

Each attempt: reads the TPU state ('gcloud compute tpus tpu-vm describe'); when the TPU is
absent, PREEMPTED or in any other state but READY, deletes it (if present), creates it again
(create.sh), mounts the bucket (mount_gcs.sh, with --bucket) and installs the code
(install.sh); then runs launch.sh --resume --kill-stale. A failed step (a stockout on create,
a preemption mid-run) ends the attempt; the next one starts after --retry-wait seconds. Stops
when train.py exits 0 on every worker; exits 1 after --max-attempts attempts, or at once when
a command exits 2 (bad arguments). train.py's --resume starts from scratch when DIR holds no
checkpoint yet, so the same command starts and continues a run. Run it where it can outlive a
laptop session (tmux, screen, a small VM). --dry-run prints one attempt as if the TPU had been
preempted.

$TPU_FLAGS_HELP
  --output-dir DIR      shared output directory, as for launch.sh (env OUTPUT_DIR; required)
  --max-attempts N      launches before giving up (env MAX_ATTEMPTS; default 10)
  --retry-wait S        seconds between attempts (env RETRY_WAIT; default 60)
  --poll-seconds S      seconds between state checks while the TPU is changing state
                        (env POLL_SECONDS; default 30)
create.sh:   --accelerator-type, --version (both required), --spot, --preemptible, --queued,
             --queued-resource-id, --queue-timeout
mount_gcs.sh (only with --bucket): --bucket, --mount-point, --gcsfuse-flags
install.sh:  --repo, --ref, --remote-dir, --jax-spec, --python
launch.sh:   --log-dir
See each script's --help; every flag has the same env var there.

Example:
  $PROG --tpu-name jmed-v4-32 --zone us-central2-b --accelerator-type v4-32 \\
    --version tpu-ubuntu2204-base --spot --bucket my-bucket \\
    --output-dir /mnt/jmed/runs/resnet50 --dry-run -- --model resnet50 --batch-size 256 \\
    --eval-batch-size 512 --data-dir /mnt/jmed/data --checkpoint-every 200
EOF
}

VALUE_FLAGS=("${TPU_FLAGS[@]}" --output-dir:OUTPUT_DIR --max-attempts:MAX_ATTEMPTS
             --retry-wait:RETRY_WAIT --poll-seconds:POLL_SECONDS
             --accelerator-type:ACCELERATOR_TYPE --version:RUNTIME_VERSION
             --queued-resource-id:QUEUED_RESOURCE_ID --queue-timeout:QUEUE_TIMEOUT
             --bucket:BUCKET --mount-point:MOUNT_POINT --gcsfuse-flags:GCSFUSE_FLAGS
             --repo:REPO_URL --ref:REPO_REF --remote-dir:REMOTE_DIR --jax-spec:JAX_SPEC
             --python:REMOTE_PYTHON --log-dir:REMOTE_LOG_DIR)
SWITCH_FLAGS=(--spot:SPOT --preemptible:PREEMPTIBLE --queued:QUEUED)

# States a TPU passes through on its own; wait for them to settle before deciding.
TRANSIENT_STATES='^(CREATING|STARTING|RESTARTING|REPAIRING|STOPPING|DELETING)$'
MAX_POLLS=60

# read_state: sets STATE to the TPU's state, empty when it does not exist (dry-run: PREEMPTED).
STATE=
read_state() {
  local scope out
  mapfile -t scope < <(tpu_scope)
  local describe=(gcloud compute tpus tpu-vm describe "$TPU_NAME" "${scope[@]}"
                  --format='value(state)')
  if is_dry_run; then
    show "${describe[@]}"
    STATE=PREEMPTED
    return 0
  fi
  if out=$("${describe[@]}" 2>&1); then
    STATE=$out
  elif [[ $out == *NOT_FOUND* || $out == *"not found"* ]]; then
    STATE=
  else
    fail "cannot read the state of TPU $TPU_NAME: $out"
  fi
}

# settled_state: read_state, waiting while the TPU is in a transient state.
settled_state() {
  local polls=0
  read_state
  while [[ $STATE =~ $TRANSIENT_STATES ]]; do
    ((polls++ < MAX_POLLS)) || fail "TPU $TPU_NAME still $STATE after $MAX_POLLS checks"
    note "TPU $TPU_NAME is $STATE; checking again in ${POLL_SECONDS}s"
    sleep "$POLL_SECONDS"
    read_state
  done
}

# recreate: replaces a missing or preempted TPU by a fresh one with the code installed; returns
# the status of the first step that fails (a stockout on create is worth another attempt).
recreate() {
  note "TPU $TPU_NAME is ${STATE:-absent}: creating it again"
  if is_true "${QUEUED:-}"; then
    # A preempted queued resource outlives its TPU; it may also be gone already.
    "$HERE/delete.sh" || note "no queued resource to delete"
  elif [[ -n $STATE ]]; then
    "$HERE/delete.sh" || return
  fi
  "$HERE/create.sh" || return
  if [[ -n ${BUCKET:-} ]]; then
    "$HERE/mount_gcs.sh" || return
  fi
  "$HERE/install.sh"
}

# attempt: one round: a READY TPU (recreated if need be), then train.py with --resume.
attempt() {
  settled_state
  if [[ $STATE != READY ]]; then
    recreate || return
  fi
  "$HERE/launch.sh" --resume --kill-stale -- "${PASSTHROUGH[@]}"
}

main() {
  parse_flags "$@"
  require TPU_NAME:--tpu-name ZONE:--zone ACCELERATOR_TYPE:--accelerator-type \
    RUNTIME_VERSION:--version OUTPUT_DIR:--output-dir
  require_shared_output_dir workers
  set_default MAX_ATTEMPTS 10
  set_default RETRY_WAIT 60
  set_default POLL_SECONDS 30
  require_int MAX_ATTEMPTS:--max-attempts RETRY_WAIT:--retry-wait POLL_SECONDS:--poll-seconds
  export POLL_SECONDS
  local n status
  for ((n = 1; n <= MAX_ATTEMPTS; n++)); do
    note "attempt $n/$MAX_ATTEMPTS"
    status=0
    attempt || status=$?
    if ((status == 0)); then
      if is_dry_run; then
        note "dry run: one attempt shown, as after a preemption"
      else
        note "train.py finished on every worker"
      fi
      return 0
    fi
    if ((status == 2)); then  # a usage error (ours, gcloud's or train.py's): retrying won't help
      die "stopped: a command rejected its arguments (exit status 2)"
    fi
    if ((n < MAX_ATTEMPTS)); then
      note "attempt failed (status $status: preemption, stockout, crash); next in ${RETRY_WAIT}s"
      sleep "$RETRY_WAIT"
    fi
  done
  fail "train.py did not finish after $MAX_ATTEMPTS attempts; see the worker logs"
}

main "$@"
