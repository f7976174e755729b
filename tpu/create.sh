#!/usr/bin/env bash
# Creates a Cloud TPU VM or pod slice, directly or through a queued resource.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"

usage() {
  cat <<EOF
Usage: $PROG [options] [-- extra gcloud create flags]

Creates a TPU VM (one host) or pod slice (several hosts, e.g. v4-32 = 4 workers) with
'gcloud compute tpus tpu-vm create', or with --queued through 'gcloud compute tpus
queued-resources create', then waits until the queued resource is ACTIVE.

$TPU_FLAGS_HELP
  --accelerator-type T  e.g. v4-8, v4-32, v5litepod-16 (env ACCELERATOR_TYPE; required)
  --version V           TPU runtime (software) version, e.g. tpu-ubuntu2204-base for v4,
                        v2-alpha-tpuv5-lite for v5e (env RUNTIME_VERSION; required)
  --spot                Spot TPU: cheaper, can be preempted (env SPOT=1)
  --preemptible         preemptible TPU (older model; direct creation only) (env PREEMPTIBLE=1)
  --queued              request through a queued resource (env QUEUED=1)
  --queued-resource-id ID  queued resource name (env QUEUED_RESOURCE_ID; default: TPU name)
  --queue-timeout S     seconds to wait for the queued resource to become ACTIVE, 0: do not
                        wait (env QUEUE_TIMEOUT; default 7200)
  --poll-seconds S      seconds between state checks (env POLL_SECONDS; default 30)

Example:
  $PROG --tpu-name jmed-v4-32 --zone us-central2-b --accelerator-type v4-32 \\
    --version tpu-ubuntu2204-base --spot --dry-run
EOF
}

VALUE_FLAGS=("${TPU_FLAGS[@]}" --accelerator-type:ACCELERATOR_TYPE --version:RUNTIME_VERSION
             --queued-resource-id:QUEUED_RESOURCE_ID --queue-timeout:QUEUE_TIMEOUT
             --poll-seconds:POLL_SECONDS)
SWITCH_FLAGS=(--spot:SPOT --preemptible:PREEMPTIBLE --queued:QUEUED)

create_direct() {
  local scope provisioning=()
  mapfile -t scope < <(tpu_scope)
  if is_true "${SPOT:-}"; then
    provisioning=(--spot)
  elif is_true "${PREEMPTIBLE:-}"; then
    provisioning=(--preemptible)
  fi
  run gcloud compute tpus tpu-vm create "$TPU_NAME" "${scope[@]}" \
    --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" \
    "${provisioning[@]}" "${PASSTHROUGH[@]}"
}

create_queued() {
  local scope provisioning=()
  mapfile -t scope < <(tpu_scope)
  if is_true "${PREEMPTIBLE:-}"; then
    die "--preemptible is not available for queued resources; use --spot"
  fi
  if is_true "${SPOT:-}"; then
    provisioning=(--spot)
  fi
  run gcloud compute tpus queued-resources create "$QUEUED_RESOURCE_ID" "${scope[@]}" \
    --node-id="$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" \
    --runtime-version="$RUNTIME_VERSION" "${provisioning[@]}" "${PASSTHROUGH[@]}"
  if ((QUEUE_TIMEOUT > 0)); then
    wait_active
  fi
}

# wait_active: polls the queued resource until ACTIVE; exits 1 on FAILED/SUSPENDED or timeout.
wait_active() {
  local scope state waited=0
  mapfile -t scope < <(tpu_scope)
  local describe=(gcloud compute tpus queued-resources describe "$QUEUED_RESOURCE_ID"
                  "${scope[@]}" --format='value(state.state)')
  if is_dry_run; then
    show "${describe[@]}"
    return 0
  fi
  while :; do
    state=$("${describe[@]}")
    case $state in
      ACTIVE) return 0 ;;
      FAILED | SUSPENDED | SUSPENDING) fail "queued resource $QUEUED_RESOURCE_ID is $state" ;;
    esac
    ((waited < QUEUE_TIMEOUT)) ||
      fail "queued resource $QUEUED_RESOURCE_ID still $state after ${QUEUE_TIMEOUT}s"
    note "queued resource $QUEUED_RESOURCE_ID: $state (waited ${waited}s)"
    sleep "$POLL_SECONDS"
    waited=$((waited + POLL_SECONDS))
  done
}

main() {
  parse_flags "$@"
  require TPU_NAME:--tpu-name ZONE:--zone ACCELERATOR_TYPE:--accelerator-type \
    RUNTIME_VERSION:--version
  set_default QUEUED_RESOURCE_ID "$TPU_NAME"
  set_default QUEUE_TIMEOUT 7200
  set_default POLL_SECONDS 30
  require_int QUEUE_TIMEOUT:--queue-timeout POLL_SECONDS:--poll-seconds
  if is_true "${QUEUED:-}"; then
    create_queued
  else
    create_direct
  fi
}

main "$@"
