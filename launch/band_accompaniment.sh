#!/usr/bin/env bash
# Accompaniment on a band corpus (issue #28's must-show): the bundled model has never heard a bass or a drum
# (the embedded corpus has none), so it is fine-tuned on band MIDI first, as a musician would on their own files,
# then asked for a bass line and a drum part to the piano of 16 held-out songs.
# The corpus: the MIDI music of two Debian packages (GPL), 41 songs of piano, bass, drums, guitar, winds...:
# openttd-openmsx (OpenTTD's music set) and planetblupi-music-midi. `apt-get download` needs no root.
# Steps: download and unpack -> split by song (the held-out list below: 16 songs with piano, bass and drums,
# drawn once at random) -> prepare the other 25 -> fine-tune `bundled` for STEPS steps at context 1024 ->
# `eval --accompany-stats bass|drums --given piano --midi-dir` on the held-out songs, grammar rule 14 off and on
# (docs/quality.md, "Accompaniment on a band corpus"). About an hour on 1 core.
# Environment knobs: WORK (default runs/band), STEPS (default 120).
set -euo pipefail
WORK=${WORK:-runs/band}
STEPS=${STEPS:-120}
HELD_OUT=(
  be_sharp_bw_redfarn busy_schedule careless_perc_redfarn flying_scotsman keep_on_rolling midnight_snow_run
  modern_motion music000 music001 music004 music007 no_work_song_redfarn slow_neasy_redfarn the_fast_route
  train_filled_with_cash tttheme2
)
mkdir -p "$WORK/debs" "$WORK/midi/train/pop" "$WORK/midi/held_out/pop"
(cd "$WORK/debs" && apt-get download openttd-openmsx planetblupi-music-midi)
for deb in "$WORK"/debs/*.deb; do dpkg-deb -x "$deb" "$WORK/debs/unpacked"; done
find "$WORK/debs/unpacked" -name '*.mid' | while read -r song; do
  name=$(basename "$song" .mid)
  if [[ " ${HELD_OUT[*]} " == *" $name "* ]]; then cp "$song" "$WORK/midi/held_out/pop/"; else cp "$song" "$WORK/midi/train/pop/"; fi
done

musenet-jax prepare --config small --source midi_dir --midi-dir "$WORK/midi/train" --data-dir "$WORK/tfds"
musenet-jax train --config small --init-from bundled --data-dir "$WORK/tfds" --workdir "$WORK/run" \
  --set data.source=midi_dir --set model.context=1024 --set train.global_batch=8 --set train.steps="$STEPS" \
  --set train.learning_rate=1e-3 --set train.warmup_steps=10 --set train.eval_every=25 --set train.checkpoint_every=25
# the model's own parts (grammar rule 14 off), then with the sampler listening too (sample.onset_bias=4)
for bias in 0 4; do
  for family in bass drums; do
    musenet-jax eval --checkpoint "$WORK/run" --accompany-stats "$family" --given piano \
      --midi-dir "$WORK/midi/held_out" --composer pop --set sample.onset_bias="$bias" \
      | tee "$WORK/accompany_${family}_bias$bias.txt"
  done
done
