#!/usr/bin/env bash
# Makes the bundled model, musenet_jax/bundled/: the `small` recipe (rotary positions, anticipation for infilling and
# accompaniment) trained by the project's own commands for two hours on the whole embedded music21 corpus, in two
# phases of one schedule: windows of 256 tokens (32 a step) to step 360, then whole pieces in windows of 1024 (8 a
# step, the same tokens a step) for the rest of the time; then given its inner critic, evaluated, and exported in
# bfloat16 (<= 25 MB). About 40 minutes of score conversion and two hours of training on 2 CPU cores, then about
# 15 minutes for the critic's fakes, the critic and the evaluation. Fakes, evaluation and export sample as the run's
# config does (configs/small.yaml's `sample` section), so the critic ranks the sampler its fakes came from.
# Environment knobs: WORK (default runs/bundled), DATA (default data/tfds), WORKERS (default 2),
# OUT (default musenet_jax/bundled, the package folder), TRAIN_SECONDS (default 7200: the recipe's budget).
set -euo pipefail
WORK=${WORK:-runs/bundled}
DATA=${DATA:-data/tfds}
WORKERS=${WORKERS:-2}
OUT=${OUT:-musenet_jax/bundled}
TRAIN_SECONDS=${TRAIN_SECONDS:-7200}
PHASE_ONE_STEPS=360
MAX_BYTES=25000000

musenet-jax prepare --source music21 --data-dir "$DATA" --workers "$WORKERS" --file-timeout 60
# The config's 720-step schedule, which the time budget stops (SIGTERM saves the step reached and exits); phase two
# resumes it with a longer context, which rotary positions allow (docs/training.md, "Longer windows: rotary
# positions and a context curriculum").
start=$(date +%s)
timeout -s TERM "$TRAIN_SECONDS" musenet-jax train --config small --data-dir "$DATA" --workdir "$WORK/run" \
  --steps "$PHASE_ONE_STEPS" || [ $? -eq 124 ]
left=$((TRAIN_SECONDS - ($(date +%s) - start)))
if [ "$left" -gt 0 ]; then
  timeout -s TERM "$left" musenet-jax train --config small --data-dir "$DATA" --workdir "$WORK/run" \
    --set model.context=1024 --set train.global_batch=8 || [ $? -eq 124 ]
fi
# fakes from the sampler the critic will score; the head alone learns: a critic with its own fine-tuned trunk
# doubles the bundle (33 MB, over the package's 25 MB), and no critic ranks by default (docs/quality.md, "Two hours")
musenet-jax critic make-fakes --checkpoint "$WORK/run" --num 64 --out "$WORK/fakes" --seed 7
musenet-jax critic train --checkpoint "$WORK/run" --fakes "$WORK/fakes" --set critic.steps=100
musenet-jax eval --checkpoint "$WORK/run" --split test --num-samples 0 --json > "$WORK/eval.json"  # the card's bits/token
musenet-jax export --checkpoint "$WORK/run" --out "$OUT" --dtype bfloat16 --eval-json "$WORK/eval.json" \
  --name musenet-jax-small
bytes=$(du -sb --exclude=.gitkeep "$OUT" | cut -f1)
echo "bundled model: $bytes bytes in $OUT"
if [ "$bytes" -gt "$MAX_BYTES" ]; then
  echo "error: the bundle is over $MAX_BYTES bytes, too large to ship in the package" >&2
  exit 1
fi
