"""How faithfully a token round trip preserves the notes: the figure the encoding is judged by."""

from __future__ import annotations

from collections import defaultdict

from musenet_jax.encoding.events import Events
from musenet_jax.encoding.vocab import Vocabulary


def matched_fraction(original: Events, decoded: Events, vocab: Vocabulary) -> float:
    """Share of original notes found in `decoded` with the same family (so drum flag) and pitch,
    onset within one time step and velocity within one bin; each decoded note matches once."""
    if len(original) == 0:
        return 1.0
    tolerance = vocab.cfg.time_step_ms / 1000.0 + 1e-9
    pool: defaultdict[tuple[int, int], list[tuple[float, int]]] = defaultdict(list)
    for start, family, pitch, vbin in zip(
        decoded.start_s, decoded.family, decoded.pitch, vocab.velocity_to_bin(decoded.velocity)
    ):
        pool[(int(family), int(pitch))].append((float(start), int(vbin)))
    matched = 0
    for start, family, pitch, vbin in zip(
        original.start_s, original.family, original.pitch, vocab.velocity_to_bin(original.velocity)
    ):
        candidates = pool[(int(family), int(pitch))]
        for k, (other_start, other_bin) in enumerate(candidates):
            if abs(other_start - start) <= tolerance and abs(other_bin - int(vbin)) <= 1:
                matched += 1
                del candidates[k]
                break
    return matched / len(original)


def round_trip_fidelity(tokenizer, midi) -> tuple[float, int]:
    """(matched fraction, note count) of MIDI -> ids -> MIDI for one file or MidiFile."""
    original = tokenizer.midi_to_events(midi)
    decoded = tokenizer.midi_to_events(tokenizer.decode(tokenizer.events_to_ids(original)))
    return matched_fraction(original, decoded, tokenizer.vocab), len(original)
