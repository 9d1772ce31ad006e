#!/usr/bin/env bash
# The listening samples in docs/samples/: four requests to a trained run, four candidates each, the
# first of generate's ranking (by the run's sample.rank_by: the likeliest by default) kept as MIDI,
# piano roll and a small OGG (FluidSynth + a GM soundfont, then oggenc).
# Needs: pip install 'musenet-jax[audio]'; apt-get install fluidsynth fluid-soundfont-gm vorbis-tools
# Usage: bash launch/make_samples.sh SOURCE [OUT]   (SOURCE: a run, a bundle or `bundled`; OUT: docs/samples)
set -euo pipefail
RUN=${1:?usage: make_samples.sh RUN [OUT]}
OUT=${2:-docs/samples}
SECONDS_PER_PIECE=${SECONDS_PER_PIECE:-30}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"

# name composer instruments
REQUESTS=(
  "bach_chorale bach voice"
  "bach_piano_strings bach piano,strings"
  "folk_tune folk piano"
  "palestrina_mass palestrina voice"
)
for request in "${REQUESTS[@]}"; do
  read -r name composer instruments <<<"$request"
  musenet-jax generate --checkpoint "$RUN" --composer "$composer" --instruments "$instruments" \
    --seconds "$SECONDS_PER_PIECE" --num-samples 4 --seed 0 --out "$TMP/$name"
  best=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['candidates'][0]['sample'])" \
    "$TMP/$name/ranking.json")
  cp "$TMP/$name/sample_$best.mid" "$OUT/$name.mid"
  cp "$TMP/$name/sample_$best.png" "$OUT/$name.png"
  oggenc -Q -q 1 -o "$OUT/$name.ogg" "$TMP/$name/sample_$best.wav"
  cp "$TMP/$name/ranking.json" "$OUT/$name.ranking.json"
  ranked_by=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['ranked_by'])" "$TMP/$name/ranking.json")
  echo "$OUT/$name: composer $composer, instruments $instruments, sample_$best (first by $ranked_by)"
done
