# shellcheck shell=bash
# Helpers shared by the tpu/ scripts (sourced, never run): flag parsing with env-var fallbacks,
# required-value checks, and `run`, which executes a command or, in dry-run mode, prints it.
#
# Every flag of a script sets the env var of the same meaning (--tpu-name sets TPU_NAME), and
# the var is exported, so a script calling another (resume.sh -> create.sh) passes its
# configuration on. DRY_RUN=1 (or --dry-run) prints each command, one per line, as `+ CMD`,
# shell-quoted so that it can be pasted into a terminal, and runs none of them.

PROG=${0##*/}

# die MESSAGE: a usage error (missing or bad value): message on stderr, exit 2.
die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 2
}

# fail MESSAGE: a runtime failure (a command failed, retries ran out): exit 1.
fail() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  exit 1
}

# note MESSAGE: progress on stderr, so that stdout holds only the commands.
note() {
  printf '# %s: %s\n' "$PROG" "$*" >&2
}

is_true() {
  [[ ${1:-} =~ ^(1|true|yes|on)$ ]]
}

is_dry_run() {
  is_true "${DRY_RUN:-0}"
}

# quote ARG: ARG as one shell word: bare when safe, else in single quotes, or in double quotes
# when it holds single quotes but nothing that double quotes would expand.
quote() {
  local arg=$1
  if [[ $arg =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$arg"
  elif [[ $arg != *\'* ]]; then
    printf "'%s'" "$arg"
  elif [[ $arg != *[\"\$\`\\!]* ]]; then
    printf '"%s"' "$arg"
  else
    printf "'%s'" "${arg//\'/\'\"\'\"\'}"
  fi
}

# quote_words ARG...: the args quoted and joined by spaces.
quote_words() {
  local out=() arg
  for arg in "$@"; do
    out+=("$(quote "$arg")")
  done
  printf '%s' "${out[*]}"
}

# show CMD...: prints the command as dry-run prints it.
show() {
  printf '+ %s\n' "$(quote_words "$@")"
}

# run CMD...: runs the command, or only shows it in dry-run mode.
run() {
  if is_dry_run; then
    show "$@"
  else
    "$@"
  fi
}

# set_default VAR VALUE: VAR=VALUE unless VAR is already set (by a flag or the environment).
set_default() {
  if [[ -z ${!1:-} ]]; then
    printf -v "$1" '%s' "$2"
  fi
}

# require VAR:--flag...: exits 2 naming every flag (and its env var) that has no value.
require() {
  local spec var missing=()
  for spec in "$@"; do
    var=${spec%%:*}
    if [[ -z ${!var:-} ]]; then
      missing+=("${spec#*:} (or env $var)")
    fi
  done
  if ((${#missing[@]})); then
    die "missing required value: $(join ', ' "${missing[@]}"); see $PROG --help"
  fi
}

# require_int VAR:--flag...: exits 2 unless each value is a non-negative integer.
require_int() {
  local spec var
  for spec in "$@"; do
    var=${spec%%:*}
    [[ ${!var:-} =~ ^[0-9]+$ ]] ||
      die "${spec#*:} (env $var) must be a non-negative integer, got '${!var:-}'"
  done
}

# require_shared_output_dir HOSTS: exits 2 unless OUTPUT_DIR is absolute: orbax writes each
# checkpoint from every host, so it must be the same path on storage all HOSTS share.
require_shared_output_dir() {
  [[ $OUTPUT_DIR == /* ]] ||
    die "--output-dir must be an absolute path on storage all $1 share, got '$OUTPUT_DIR'"
}

join() {
  local sep=$1 first=$2
  shift 2
  printf '%s' "$first" "${@/#/$sep}"
}

# parse_flags ARG...: parses a script's flags from two tables the script defines:
#   VALUE_FLAGS=(--tpu-name:TPU_NAME ...)   flags taking a value (--flag VALUE or --flag=VALUE)
#   SWITCH_FLAGS=(--spot:SPOT ...)          flags setting their var to 1
# plus --dry-run (DRY_RUN=1) and -h/--help (calls the script's `usage`, exits 0). Arguments
# after `--` land in PASSTHROUGH. Exits 2 on an unknown flag or a missing value.
# PASSTHROUGH is read by the sourcing script, which shellcheck cannot see from this file.
# shellcheck disable=SC2034
parse_flags() {
  local arg name var
  PASSTHROUGH=()
  while (($#)); do
    arg=$1
    case $arg in
      --)
        shift
        PASSTHROUGH=("$@")
        return 0
        ;;
      -h | --help)
        usage
        exit 0
        ;;
      --dry-run)
        export DRY_RUN=1
        shift
        continue
        ;;
    esac
    name=${arg%%=*}
    if var=$(flag_var "$name" "${VALUE_FLAGS[@]}"); then
      if [[ $arg == *=* ]]; then
        printf -v "$var" '%s' "${arg#*=}"
        shift
      else
        (($# >= 2)) || die "$name needs a value"
        printf -v "$var" '%s' "$2"
        shift 2
      fi
    elif var=$(flag_var "$arg" "${SWITCH_FLAGS[@]}"); then
      printf -v "$var" '%s' 1
      shift
    else
      die "unknown option '$arg' (see $PROG --help; train.py flags go after --)"
    fi
    export "${var?}"
  done
}

# flag_var FLAG SPEC...: prints the var a flag sets, from specs like --zone:ZONE.
flag_var() {
  local flag=$1 spec
  shift
  for spec in "$@"; do
    if [[ ${spec%%:*} == "$flag" ]]; then
      printf '%s' "${spec#*:}"
      return 0
    fi
  done
  return 1
}

# The flags that name one TPU, shared by every TPU script: read there, unseen from this file.
# shellcheck disable=SC2034
{
  TPU_FLAGS=(--tpu-name:TPU_NAME --zone:ZONE --project:PROJECT)
  TPU_FLAGS_HELP='  --tpu-name NAME       TPU VM / pod slice name (env TPU_NAME; required)
  --zone ZONE           e.g. us-central2-b (env ZONE; required)
  --project PROJECT     GCP project (env PROJECT; default: gcloud'"'"'s configured project)
  --dry-run             print the commands instead of running them (env DRY_RUN=1)
  -h, --help            this help'
}

# tpu_scope: prints the --zone/--project gcloud flags, one per line (read with mapfile).
tpu_scope() {
  printf '%s\n' "--zone=$ZONE"
  if [[ -n ${PROJECT:-} ]]; then
    printf '%s\n' "--project=$PROJECT"
  fi
}

# on_all_workers REMOTE_COMMAND: runs a shell command line on every worker of the TPU.
on_all_workers() {
  local scope
  mapfile -t scope < <(tpu_scope)
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${scope[@]}" --worker=all --command="$1"
}
