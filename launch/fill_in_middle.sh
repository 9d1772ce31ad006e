#!/usr/bin/env bash
# Teaches the bundled model to fill a span in the middle (encoding.span_infill=fill_in_middle, docs/encoding.md):
# a fine-tune of `bundled` on the whole embedded music21 corpus with half its rows spans whose given rest of the
# piece comes first, then `eval --infill-spans 8` on the test split for it and for the bundled model, whose
# left-to-right scores are the comparison (docs/quality.md, "Filling in the middle"). About 50 minutes of score
# conversion (reused when DATA already holds the dataset) and TRAIN_SECONDS of training on one pinned core, then
# about 15 minutes of scoring.
# Environment knobs: WORK (default runs/fill_in_middle), DATA (default data/tfds), WORKERS (default 2), STEPS (the
# schedule, default 320), TRAIN_SECONDS (default 5400: a SIGTERM saves the step reached), CPU (the core to pin
# training to, default 1).
set -euo pipefail
WORK=${WORK:-runs/fill_in_middle}
DATA=${DATA:-data/tfds}
WORKERS=${WORKERS:-2}
STEPS=${STEPS:-320}
TRAIN_SECONDS=${TRAIN_SECONDS:-5400}
CPU=${CPU:-1}

musenet-jax prepare --source music21 --data-dir "$DATA" --workers "$WORKERS" --file-timeout 60  # reused if there
# The bundle's architecture and windows (1024 x 8, as in its second phase), a short warmup and a tenth of the
# recipe's peak learning rate over the new schedule: the parameters are trained, the sequence format is new.
timeout -s TERM "$TRAIN_SECONDS" taskset -c "$CPU" musenet-jax train --config small --init-from bundled \
  --data-dir "$DATA" --workdir "$WORK/run" --steps "$STEPS" \
  --set encoding.span_infill=fill_in_middle --set model.context=1024 --set train.global_batch=8 \
  --set train.steps="$STEPS" --set train.learning_rate=1e-3 --set train.warmup_steps=20 \
  --set train.eval_every=50 || [ $? -eq 124 ]
musenet-jax eval --checkpoint "$WORK/run" --data-dir "$DATA" --split test --infill-spans 8 --json \
  > "$WORK/spans_fill_in_middle.json"
musenet-jax eval --data-dir "$DATA" --split test --infill-spans 8 --json > "$WORK/spans_bundled.json"
