#!/usr/bin/env bash
# Mounts a Cloud Storage bucket with gcsfuse at the same path on every worker of a TPU, so that
# train.py's --output-dir (and --data-dir) can live on storage all hosts share.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"

# Orbax finalises a checkpoint by renaming its temporary directory, which gcsfuse refuses unless
# --rename-dir-limit allows it; the metadata caches are off because every host writes into the
# same directories and each must see the others' files at once.
DEFAULT_GCSFUSE_FLAGS='--implicit-dirs --rename-dir-limit=200000 --metadata-cache-ttl-secs=0'

usage() {
  cat <<EOF
Usage: $PROG [options]

On every worker: installs gcsfuse (from packages.cloud.google.com) when missing, creates the
mount point and mounts the bucket there (a no-op when it is already mounted).

$TPU_FLAGS_HELP
  --bucket NAME         bucket to mount, with or without gs:// (env BUCKET; required)
  --mount-point DIR     absolute path on each worker (env MOUNT_POINT; default /mnt/jmed)
  --gcsfuse-flags F     gcsfuse options, one string (env GCSFUSE_FLAGS; default
                        '$DEFAULT_GCSFUSE_FLAGS')

Example:
  $PROG --tpu-name jmed-v4-32 --zone us-central2-b --bucket my-bucket --dry-run
EOF
}

VALUE_FLAGS=("${TPU_FLAGS[@]}" --bucket:BUCKET --mount-point:MOUNT_POINT
             --gcsfuse-flags:GCSFUSE_FLAGS)
SWITCH_FLAGS=()

# remote_mount_command: the shell line each worker runs.
remote_mount_command() {
  local name=${BUCKET#gs://} dir
  name=${name%/}
  dir=$(quote "$MOUNT_POINT")
  local apt=https://packages.cloud.google.com/apt keyring=/usr/share/keyrings/cloud.google.asc
  local source="deb [signed-by=$keyring] $apt gcsfuse-\$(lsb_release -cs) main"
  local install=(
    "echo \"$source\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null"
    "curl -fsSL $apt/doc/apt-key.gpg | sudo tee $keyring >/dev/null"
    "sudo apt-get -o DPkg::Lock::Timeout=600 update -qq"
    "sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq gcsfuse"
  )
  printf '%s' "set -e; if ! command -v gcsfuse >/dev/null; then $(join '; ' "${install[@]}"); fi; "
  printf '%s' "sudo mkdir -p $dir; sudo chown \"\$(id -u):\$(id -g)\" $dir; "
  printf '%s' "mountpoint -q $dir || gcsfuse $GCSFUSE_FLAGS $(quote "$name") $dir"
}

main() {
  parse_flags "$@"
  ((${#PASSTHROUGH[@]} == 0)) || die "unexpected arguments: ${PASSTHROUGH[*]}"
  require TPU_NAME:--tpu-name ZONE:--zone BUCKET:--bucket
  set_default MOUNT_POINT /mnt/jmed
  set_default GCSFUSE_FLAGS "$DEFAULT_GCSFUSE_FLAGS"
  [[ $MOUNT_POINT == /* ]] || die "--mount-point must be an absolute path, got '$MOUNT_POINT'"
  on_all_workers "$(remote_mount_command)"
}

main "$@"
