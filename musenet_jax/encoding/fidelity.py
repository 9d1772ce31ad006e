"""How faithfully a token round trip preserves the notes: the figure the encoding is judged by, for onsets
and for note ends.

Note ends can only change in one known case, unisons: two notes of one family on one pitch sounding at
once share a (family, pitch) slot, and decoding closes the oldest open note at each note-off, so when the
later note ends first the two notes' lengths swap. The report counts such notes (`unison_notes`), so a
changed length is either one of them or a fault."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from musenet_jax.encoding.events import Events
from musenet_jax.encoding.families import DRUMS
from musenet_jax.encoding.vocab import Vocabulary


def matched_fraction(original: Events, decoded: Events, vocab: Vocabulary, *, ends: bool = False) -> float:
    """Share of original notes found in `decoded` with the same family (so drum flag) and pitch,
    onset within one time step and velocity within one bin (and with `ends`, a melodic note's end within
    one time step too); each decoded note matches once."""
    if len(original) == 0:
        return 1.0
    tolerance = vocab.cfg.time_step_ms / 1000.0 + 1e-9
    pool: defaultdict[tuple[int, int], list[tuple[float, float, int]]] = defaultdict(list)
    for start, end, family, pitch, vbin in zip(
        decoded.start_s, decoded.end_s, decoded.family, decoded.pitch, vocab.velocity_to_bin(decoded.velocity)
    ):
        pool[(int(family), int(pitch))].append((float(start), float(end), int(vbin)))
    matched = 0
    for start, end, family, pitch, vbin in zip(
        original.start_s,
        original.end_s,
        original.family,
        original.pitch,
        vocab.velocity_to_bin(original.velocity),
    ):
        candidates = pool[(int(family), int(pitch))]
        check_end = ends and int(family) != DRUMS
        for k, (other_start, other_end, other_bin) in enumerate(candidates):
            if abs(other_start - start) > tolerance or abs(other_bin - int(vbin)) > 1:
                continue
            if check_end and abs(other_end - end) > tolerance:
                continue
            matched += 1
            del candidates[k]
            break
    return matched / len(original)


def unison_notes(events: Events, step_s: float) -> int:
    """Melodic notes that overlap another note of the same family and pitch (on the `step_s` grid): the
    only notes whose length a round trip may change."""
    start = np.rint(events.start_s / step_s).astype(np.int64)
    end = np.maximum(np.rint(events.end_s / step_s).astype(np.int64), start + 1)
    count = 0
    melodic = np.flatnonzero(events.family != DRUMS)
    keys = events.family[melodic].astype(np.int64) * 128 + events.pitch[melodic]
    for key in np.unique(keys):
        rows = melodic[keys == key]
        order = rows[np.argsort(start[rows], kind="stable")]
        latest_end = -1
        overlapping = np.zeros(len(order), bool)
        for i, row in enumerate(order):
            if start[row] < latest_end:
                overlapping[i] = True
                overlapping[i - 1] = True  # at least the note it overlaps (close enough for a count)
            latest_end = max(latest_end, end[row])
        count += int(overlapping.sum())
    return count


def round_trip_report(tokenizer, midi) -> dict[str, float | int]:
    """MIDI -> ids -> MIDI for one file: {"notes", "onsets" (matched fraction), "ends" (matched fraction
    with note ends too), "unison_notes"}."""
    original = tokenizer.midi_to_events(midi)
    decoded = tokenizer.midi_to_events(tokenizer.decode(tokenizer.events_to_ids(original)))
    vocab = tokenizer.vocab
    return {
        "notes": len(original),
        "onsets": matched_fraction(original, decoded, vocab),
        "ends": matched_fraction(original, decoded, vocab, ends=True),
        "unison_notes": unison_notes(original, tokenizer.step_s),
    }


def round_trip_fidelity(tokenizer, midi) -> tuple[float, int]:
    """(matched fraction, note count) of MIDI -> ids -> MIDI for one file or MidiFile."""
    original = tokenizer.midi_to_events(midi)
    decoded = tokenizer.midi_to_events(tokenizer.decode(tokenizer.events_to_ids(original)))
    return matched_fraction(original, decoded, tokenizer.vocab), len(original)
