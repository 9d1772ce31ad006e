#!/usr/bin/env bash
# The project's main job on the embedded default corpus, small enough for a laptop CPU:
# prepare music21's scores as TFDS shards -> train the quickstart model -> compose with it.
# Environment knobs: LIMIT (input files, default 300; 0 = the whole corpus), STEPS (default 300), OUT (default
# runs/quickstart), SEED (the model's initialisation and the data order, default 0).
set -euo pipefail
LIMIT=${LIMIT:-300}
STEPS=${STEPS:-300}
OUT=${OUT:-runs/quickstart}
SEED=${SEED:-0}
DATA="$OUT/tfds"
limit_arg=()
[ "$LIMIT" != 0 ] && limit_arg=(--limit "$LIMIT")

musenet-jax prepare --source music21 --data-dir "$DATA" "${limit_arg[@]}"
musenet-jax train --config quickstart --data-dir "$DATA" --workdir "$OUT/train" --steps "$STEPS" \
  --set train.seed="$SEED" --set data.shuffle_seed="$SEED"
musenet-jax generate --checkpoint "$OUT/train" --composer bach --instruments piano,strings \
  --seconds 20 --num-samples 2 --out "$OUT/samples"
echo "samples (MIDI, piano rolls, ranking.json) in $OUT/samples"
