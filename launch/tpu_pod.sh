#!/usr/bin/env bash
# Trains on a Cloud TPU VM pod slice: the same `musenet-jax train --multihost` runs on every worker
# (one program per host), JAX finds the other hosts from the TPU VM environment.
#
#   launch/tpu_pod.sh [--dry-run] [--setup] --tpu NAME --zone ZONE [--project ID] \
#       [--remote-dir DIR] -- [musenet-jax train arguments...]
#
# --setup   first ships this checkout's committed HEAD (git archive) to all workers and installs it
#           with the TPU extra into DIR/.venv; needed once per TPU VM (and after code changes).
# --dry-run prints the commands instead of running them.
# Data and work directories must be visible to every worker under the same name: gs:// URLs (no mount),
# or paths of a filesystem every worker shares:
#   launch/tpu_pod.sh --setup --tpu my-v5p-64 --zone us-east5-a -- \
#       --config musenet_72l --data-dir gs://BUCKET/tfds --workdir gs://BUCKET/runs/musenet_72l
# Rerunning the same command resumes from the latest checkpoint (e.g. after a preemption).
set -euo pipefail

usage() {
  echo "usage: $(sed -n '5,6p' "$0" | sed 's/^# *//')" >&2
  exit 2
}

dry_run=0
setup=0
tpu=""
zone=""
project=""
remote_dir="musenet-jax"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --setup) setup=1 ;;
    --tpu) tpu=${2:?--tpu needs a value}; shift ;;
    --zone) zone=${2:?--zone needs a value}; shift ;;
    --project) project=${2:?--project needs a value}; shift ;;
    --remote-dir) remote_dir=${2:?--remote-dir needs a value}; shift ;;
    --) shift; break ;;
    *) echo "$0: unknown option $1" >&2; usage ;;
  esac
  shift
done
[[ -n "$tpu" && -n "$zone" ]] || usage

gcloud_tpu=(gcloud compute tpus tpu-vm)
where=(--zone "$zone")
[[ -z "$project" ]] || where+=(--project "$project")
archive="${TMPDIR:-/tmp}/musenet-jax-$tpu.tar.gz"
repo_root=$(cd "$(dirname "$0")/.." && pwd)

run() {  # prints (dry run) or runs one command
  if ((dry_run)); then
    printf '%q ' "$@"
    echo
  else
    "$@"
  fi
}

train_args=$(printf '%q ' "$@")

if ((setup)); then
  run git -C "$repo_root" archive --format=tar.gz -o "$archive" HEAD
  run "${gcloud_tpu[@]}" scp "$archive" "$tpu:musenet-jax.tar.gz" --worker=all "${where[@]}"
  run "${gcloud_tpu[@]}" ssh "$tpu" --worker=all "${where[@]}" --command \
    "set -e; mkdir -p $remote_dir && tar -xzf musenet-jax.tar.gz -C $remote_dir && cd $remote_dir \
&& python3 -m venv .venv && .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[tpu]'"
fi
run "${gcloud_tpu[@]}" ssh "$tpu" --worker=all "${where[@]}" --command \
  "cd $remote_dir && .venv/bin/musenet-jax train --multihost $train_args"
