#!/usr/bin/env bash
# The first check on a lent GPU, under 8 minutes: the Triton kernels' equality tests compiled on the
# device, the attention backends timed at n = 4096 and 16384 (forward + backward), the small and a 2-layer
# musenet_72l train step (tokens/s, MFU); every figure and each part's status in ONE JSON (docs/scaling.md,
# "GPU"). Without a GPU it runs the same plan at tiny shapes on the CPU (a test of the plumbing).
#
#   bash launch/device_check.sh [--out device_check.json] [--dry-run] [--tune-gpu]
#
# Runs this checkout with PYTHON (default: .venv/bin/python when there is one, else python3), whose
# environment needs jax[cuda12] and pytest on a GPU machine (pip install -e '.[gpu,test]').
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
default_python=python3
[ -x "$root/.venv/bin/python" ] && default_python="$root/.venv/bin/python"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-$default_python}" -m musenet_jax.cli.main bench device "$@"
