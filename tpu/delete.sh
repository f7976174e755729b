#!/usr/bin/env bash
# Deletes a TPU VM or pod slice (or its queued resource), without a confirmation prompt.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"

usage() {
  cat <<EOF
Usage: $PROG [options]

Deletes the TPU with 'gcloud compute tpus tpu-vm delete --quiet', or with --queued its queued
resource and the TPU in it ('gcloud compute tpus queued-resources delete --force --quiet').
Storage outside the TPU (a bucket, a Filestore share) and the checkpoints in it are kept.

$TPU_FLAGS_HELP
  --queued              the TPU came from a queued resource (env QUEUED=1)
  --queued-resource-id ID  queued resource name (env QUEUED_RESOURCE_ID; default: TPU name)
EOF
}

VALUE_FLAGS=("${TPU_FLAGS[@]}" --queued-resource-id:QUEUED_RESOURCE_ID)
SWITCH_FLAGS=(--queued:QUEUED)

main() {
  local scope
  parse_flags "$@"
  ((${#PASSTHROUGH[@]} == 0)) || die "unexpected arguments: ${PASSTHROUGH[*]}"
  require TPU_NAME:--tpu-name ZONE:--zone
  set_default QUEUED_RESOURCE_ID "$TPU_NAME"
  mapfile -t scope < <(tpu_scope)
  if is_true "${QUEUED:-}"; then
    run gcloud compute tpus queued-resources delete "$QUEUED_RESOURCE_ID" "${scope[@]}" \
      --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${scope[@]}" --quiet
  fi
}

main "$@"
