#!/usr/bin/env bash
# Accompaniment on a band corpus (issue #28's must-show): the bundled model has never heard a bass or a drum
# (the embedded corpus has none), so it is fine-tuned on band MIDI first, as a musician would on their own files,
# then asked for a bass line and a drum part to the piano of 16 held-out songs.
# The corpus: the MIDI music of three Debian packages, 41 band songs to train and test on (GPL: openttd-openmsx,
# OpenTTD's music set, and planetblupi-music-midi) and 12 to validate on (BSD: freedoom, whose two game files
# hold their music as MIDI lumps). `apt-get download` needs no root.
# Steps: download and unpack -> split by song (the held-out list below: 16 songs with piano, bass and drums,
# drawn once at random; the validation list: Freedoom's songs with piano, bass and drums) -> prepare the other
# 25 -> fine-tune `bundled` for STEPS steps at context 1024 -> grammar rule 14's strength chosen on the
# validation songs (the one of BIASES with the smallest mean distance to the real parts over bass and drums,
# onsets and key) -> `eval --accompany-stats bass|drums --given piano --midi-dir` on the held-out songs, rule 14
# off and at that strength (docs/quality.md, "Accompaniment on a band corpus"). About 90 minutes on 1 core.
# Environment knobs: WORK (default runs/band), STEPS (default 120), BIASES (default "0 2 4 8 16 32").
set -euo pipefail
WORK=${WORK:-runs/band}
STEPS=${STEPS:-120}
BIASES=${BIASES:-0 2 4 8 16 32}
HELD_OUT=(
  be_sharp_bw_redfarn busy_schedule careless_perc_redfarn flying_scotsman keep_on_rolling midnight_snow_run
  modern_motion music000 music001 music004 music007 no_work_song_redfarn slow_neasy_redfarn the_fast_route
  train_filled_with_cash tttheme2
)
VALIDATION=(e1m1 e1m4 e1m7 e1m8 e2m3 e2m4 e2m7 e3m4 e3m7 ddtbl2 messg2 romero)
mkdir -p "$WORK/debs" "$WORK/midi/train/pop" "$WORK/midi/held_out/pop" "$WORK/midi/validation/pop"
(cd "$WORK/debs" && apt-get download openttd-openmsx planetblupi-music-midi freedoom)
for deb in "$WORK"/debs/*.deb; do dpkg-deb -x "$deb" "$WORK/debs/unpacked"; done
find "$WORK/debs/unpacked" -name '*.mid' | while read -r song; do
  name=$(basename "$song" .mid)
  if [[ " ${HELD_OUT[*]} " == *" $name "* ]]; then cp "$song" "$WORK/midi/held_out/pop/"; else cp "$song" "$WORK/midi/train/pop/"; fi
done
# a WAD file is a directory of named lumps; Freedoom's music lumps (D_...) are standard MIDI files
python - "$WORK/midi/validation/pop" "${VALIDATION[@]}" "$WORK"/debs/unpacked/usr/share/games/doom/freedoom*.wad <<'PY'
import struct, sys
out, wanted, wads = sys.argv[1], set(a for a in sys.argv[2:] if not a.endswith(".wad")), [a for a in sys.argv[2:] if a.endswith(".wad")]
for wad in wads:
    data = open(wad, "rb").read()
    count, table = struct.unpack("<ii", data[4:12])
    for i in range(count):
        offset, size, name = struct.unpack("<ii8s", data[table + 16 * i : table + 16 * i + 16])
        song = name.rstrip(b"\0").decode().lower().removeprefix("d_")
        if song in wanted and data[offset : offset + 4] == b"MThd":
            open(f"{out}/{song}.mid", "wb").write(data[offset : offset + size])
PY

musenet-jax prepare --config small --source midi_dir --midi-dir "$WORK/midi/train" --data-dir "$WORK/tfds"
musenet-jax train --config small --init-from bundled --data-dir "$WORK/tfds" --workdir "$WORK/run" \
  --set data.source=midi_dir --set model.context=1024 --set train.global_batch=8 --set train.steps="$STEPS" \
  --set train.learning_rate=1e-3 --set train.warmup_steps=10 --set train.eval_every=25 --set train.checkpoint_every=25
for bias in $BIASES; do
  for family in bass drums; do
    musenet-jax eval --checkpoint "$WORK/run" --accompany-stats "$family" --given piano \
      --midi-dir "$WORK/midi/validation" --composer pop --set sample.onset_bias="$bias" --json \
      > "$WORK/accompany_validation_${family}_bias$bias.json"
  done
done
chosen=$(python - "$WORK" $BIASES <<'PY'
import json, sys
work, biases = sys.argv[1], sys.argv[2:]
def distance(bias):
    reports = [json.load(open(f"{work}/accompany_validation_{family}_bias{bias}.json")) for family in ("bass", "drums")]
    gaps = [abs(r["model"][k] - r["real"][k]) for r in reports for k in r["model"] if r["model"][k] is not None]
    return sum(gaps) / len(gaps)
print(min(biases, key=distance))
PY
)
echo "rule 14's strength chosen on the validation songs: sample.onset_bias=$chosen"
# the model's own parts (rule 14 off), then with the sampler listening too, on the held-out songs
for bias in 0 "$chosen"; do
  for family in bass drums; do
    musenet-jax eval --checkpoint "$WORK/run" --accompany-stats "$family" --given piano \
      --midi-dir "$WORK/midi/held_out" --composer pop --set sample.onset_bias="$bias" | tee "$WORK/accompany_${family}_bias$bias.txt"
  done
done
