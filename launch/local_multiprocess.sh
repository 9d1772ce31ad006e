#!/usr/bin/env bash
# Runs `musenet-jax train` as N cooperating CPU processes on this machine (gloo collectives), the
# way a pod runs one program per host: each process sees DEVICES_PER_PROCESS fake CPU devices and
# reads its own shard of the data.
#
#   launch/local_multiprocess.sh [--dry-run] N [musenet-jax train arguments...]
#   e.g. launch/local_multiprocess.sh 2 --config tiny --data-dir data/tfds --workdir runs/mp
#
# Environment: DEVICES_PER_PROCESS (default 2), PORT (coordinator port; default: a free one),
# PYTHON (default: python3). If one process fails the others are stopped; Ctrl-C or SIGTERM is
# passed on to all of them, so they checkpoint together and exit.
set -euo pipefail

dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then
  dry_run=1
  shift
fi
if [[ $# -lt 1 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [--dry-run] N [musenet-jax train arguments...]" >&2
  exit 2
fi
n=$1
shift

python=${PYTHON:-python3}
devices=${DEVICES_PER_PROCESS:-2}
port=${PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

process_command() {  # the command line of process $1
  local i=$1
  shift
  cmd=(env "XLA_FLAGS=--xla_force_host_platform_device_count=$devices" JAX_PLATFORMS=cpu "$python" -m
    musenet_jax.cli.main train "$@" --coordinator "127.0.0.1:$port" --num-processes "$n" --process-id "$i")
}

if ((dry_run)); then
  for ((i = 0; i < n; i++)); do
    process_command "$i" "$@"
    printf '%q ' "${cmd[@]}"
    echo
  done
  exit 0
fi

declare -A live=()
stop_all() { ((${#live[@]} == 0)) || kill -TERM "${!live[@]}" 2>/dev/null || true; }
trap stop_all TERM INT
for ((i = 0; i < n; i++)); do
  process_command "$i" "$@"
  "${cmd[@]}" &
  live[$!]=1
done

status=0
while ((${#live[@]} > 0)); do
  set +e
  wait -n -p finished "${!live[@]}"
  rc=$?
  set -e
  if [[ -z "${finished:-}" ]]; then
    continue  # woken by a trapped signal; the children got it and are finishing
  fi
  unset "live[$finished]"
  unset finished
  if ((rc != 0 && status == 0)); then
    status=$rc
    echo "$0: a process exited with status $rc; stopping the others" >&2
    stop_all
  fi
done
exit "$status"
