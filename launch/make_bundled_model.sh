#!/usr/bin/env bash
# Makes the bundled model, musenet_jax/bundled/: the `small` config trained by the project's own commands on
# the whole embedded music21 corpus, evaluated, given its inner critic, and exported in bfloat16 (<= 25 MB).
# About 40 min of score conversion and an hour of training on 2 CPU cores. Rerunning resumes the training.
# Environment knobs: WORK (default runs/bundled), DATA (default data/tfds), WORKERS (default 2),
# OUT (default musenet_jax/bundled, the package folder).
set -euo pipefail
WORK=${WORK:-runs/bundled}
DATA=${DATA:-data/tfds}
WORKERS=${WORKERS:-2}
OUT=${OUT:-musenet_jax/bundled}
MAX_BYTES=25000000

musenet-jax prepare --source music21 --data-dir "$DATA" --workers "$WORKERS"
musenet-jax train --config small --data-dir "$DATA" --workdir "$WORK/run"
musenet-jax critic make-fakes --checkpoint "$WORK/run" --num 128 --out "$WORK/fakes"
musenet-jax critic train --checkpoint "$WORK/run" --fakes "$WORK/fakes"
musenet-jax eval --checkpoint "$WORK/run" --split test --num-samples 8 --json > "$WORK/eval.json"
musenet-jax export --checkpoint "$WORK/run" --out "$OUT" --dtype bfloat16 --eval-json "$WORK/eval.json" \
  --name musenet-jax-small
bytes=$(du -sb --exclude=.gitkeep "$OUT" | cut -f1)
echo "bundled model: $bytes bytes in $OUT"
if [ "$bytes" -gt "$MAX_BYTES" ]; then
  echo "error: the bundle is over $MAX_BYTES bytes, too large to ship in the package" >&2
  exit 1
fi
