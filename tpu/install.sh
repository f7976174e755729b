#!/usr/bin/env bash
# Puts the jmed code on every worker of a TPU and installs it with JAX for TPU.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"
REPO_ROOT=$(cd "$HERE/.." && pwd)

usage() {
  cat <<EOF
Usage: $PROG [options]

Copies this checkout (or, with --repo, clones a git repository) to REMOTE_DIR on every worker
and runs 'python3 -m pip install -e . JAX_SPEC' there. The local copy is a tarball of the
working tree, uncommitted changes included, without .git, runs/, caches and *.egg-info; it is
unpacked over REMOTE_DIR.

$TPU_FLAGS_HELP
  --repo URL            clone this git URL on each worker instead of copying the checkout
                        (env REPO_URL)
  --ref REF             branch, tag or commit to check out with --repo (env REPO_REF;
                        default: the remote's HEAD)
  --remote-dir DIR      code directory on each worker, relative to the home directory or
                        absolute (env REMOTE_DIR; default jmed)
  --jax-spec SPEC       JAX requirement to install (env JAX_SPEC; default 'jax[tpu]')
  --python PY           Python on the workers (env REMOTE_PYTHON; default python3)

Example:
  $PROG --tpu-name jmed-v4-32 --zone us-central2-b --dry-run
EOF
}

VALUE_FLAGS=("${TPU_FLAGS[@]}" --repo:REPO_URL --ref:REPO_REF --remote-dir:REMOTE_DIR
             --jax-spec:JAX_SPEC --python:REMOTE_PYTHON)
SWITCH_FLAGS=()

REMOTE_TARBALL=jmed-src.tar.gz

# pip_install: the remote command installing the code in the current directory.
pip_install() {
  quote_words "$REMOTE_PYTHON" -m pip install -e . "$JAX_SPEC"
}

# copy_checkout: tars the local working tree and copies it to every worker's home directory.
copy_checkout() {
  local scope tarball=${TMPDIR:-/tmp}/jmed-src-$TPU_NAME.tar.gz
  mapfile -t scope < <(tpu_scope)
  run tar -czf "$tarball" --exclude=.git --exclude=./runs --exclude=./build --exclude=.venv \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache --exclude=.ruff_cache \
    -C "$REPO_ROOT" .
  run gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME:$REMOTE_TARBALL" "${scope[@]}" \
    --worker=all
  run rm -f "$tarball"
  local dir
  dir=$(quote "$REMOTE_DIR")
  on_all_workers "set -e; mkdir -p $dir; tar -xzf $REMOTE_TARBALL -C $dir; \
rm -f $REMOTE_TARBALL; cd $dir; $(pip_install)"
}

# clone_repo: clones (or updates) REPO_URL at REPO_REF on every worker.
clone_repo() {
  local dir
  dir=$(quote "$REMOTE_DIR")
  on_all_workers "set -e; [ -d $dir/.git ] || git clone -q $(quote "$REPO_URL") $dir; \
cd $dir; git fetch -q origin $(quote "$REPO_REF"); git checkout -q --detach FETCH_HEAD; \
$(pip_install)"
}

main() {
  parse_flags "$@"
  ((${#PASSTHROUGH[@]} == 0)) || die "unexpected arguments: ${PASSTHROUGH[*]}"
  require TPU_NAME:--tpu-name ZONE:--zone
  set_default REPO_REF HEAD
  set_default REMOTE_DIR jmed
  set_default JAX_SPEC 'jax[tpu]'
  set_default REMOTE_PYTHON python3
  if [[ -n ${REPO_URL:-} ]]; then
    clone_repo
  else
    copy_checkout
  fi
}

main "$@"
