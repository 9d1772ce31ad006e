#!/usr/bin/env bash
# Makes the bundled model, musenet_jax/bundled/: the `small` recipe trained by the project's own commands for one
# hour on the whole embedded music21 corpus, given its inner critic, evaluated, and exported in bfloat16
# (<= 25 MB). About 75 minutes of score conversion and an hour of training on 2 CPU cores, then about 20 minutes
# for the critic's fakes, the critic and the evaluation. Fakes, evaluation and export sample as the run's config
# does (configs/small.yaml's `sample` section), so the critic ranks the sampler its fakes came from.
# Environment knobs: WORK (default runs/bundled), DATA (default data/tfds), WORKERS (default 2),
# OUT (default musenet_jax/bundled, the package folder), TRAIN_SECONDS (default 3600: the recipe's budget).
set -euo pipefail
WORK=${WORK:-runs/bundled}
DATA=${DATA:-data/tfds}
WORKERS=${WORKERS:-2}
OUT=${OUT:-musenet_jax/bundled}
TRAIN_SECONDS=${TRAIN_SECONDS:-3600}
MAX_BYTES=25000000

musenet-jax prepare --source music21 --data-dir "$DATA" --workers "$WORKERS" --file-timeout 60
# The config's 310-step schedule, which the hour stops (SIGTERM saves the step reached and exits; the shipped run
# reached 306). Rerunning after the hour resumes the schedule instead.
timeout -s TERM "$TRAIN_SECONDS" musenet-jax train --config small --data-dir "$DATA" --workdir "$WORK/run" \
  || [ $? -eq 124 ]
# fakes from the sampler the critic will rank, and the trunk fine-tuned too: docs/quality.md, "The inner critic"
musenet-jax critic make-fakes --checkpoint "$WORK/run" --num 128 --out "$WORK/fakes" --seed 7
musenet-jax critic train --checkpoint "$WORK/run" --fakes "$WORK/fakes" --set critic.finetune_trunk=true
musenet-jax eval --checkpoint "$WORK/run" --split test --num-samples 32 --json > "$WORK/eval.json"
musenet-jax export --checkpoint "$WORK/run" --out "$OUT" --dtype bfloat16 --eval-json "$WORK/eval.json" \
  --name musenet-jax-small
bytes=$(du -sb --exclude=.gitkeep "$OUT" | cut -f1)
echo "bundled model: $bytes bytes in $OUT"
if [ "$bytes" -gt "$MAX_BYTES" ]; then
  echo "error: the bundle is over $MAX_BYTES bytes, too large to ship in the package" >&2
  exit 1
fi
