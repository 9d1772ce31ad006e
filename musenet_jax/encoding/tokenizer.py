"""MIDI <-> events <-> token ids, MuseNet style.

A sequence is `composer, instrument tokens (one per family present, ascending), start, events..., end`.
Events are note-ons (`piano:v3:G4`), note-offs (`piano:v0:G4`, none for drums) and `wait:N` tokens that
advance time by N steps. At one time step note-offs come before note-ons, so a repeated note is released
before it is struck again; every note lasts at least one step.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections import defaultdict, deque

import miditoolkit
import numpy as np

from musenet_jax.encoding import midi_io
from musenet_jax.encoding.budget import over_budget
from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.encoding.events import Events
from musenet_jax.encoding.families import DRUMS
from musenet_jax.encoding.timing import duration_steps, token_times
from musenet_jax.encoding.vocab import (
    KIND_ANTICIPATE,
    KIND_COMPOSER,
    KIND_INSTRUMENT,
    KIND_NOTE_OFF,
    KIND_NOTE_ON,
    Vocabulary,
    vocabulary,
)
from musenet_jax.errors import unknown_choice

MidiSource = str | os.PathLike | miditoolkit.MidiFile


PARSERS = ("auto", "symusic", "miditoolkit")


@dataclasses.dataclass(frozen=True)
class NotesRead:
    """The notes of one file the encoding keeps, and how many the `max_seconds` cut removed."""

    events: Events
    cut_notes: int


class Tokenizer:
    """The encoding of one `EncodingConfig`; `vocab` owns the ids.

    `parser` picks who reads MIDI files from disk: symusic (fast, the `fast-midi` extra) or miditoolkit;
    `auto` uses symusic when it is installed. Both yield the same notes (tested).
    """

    def __init__(self, cfg: EncodingConfig = EncodingConfig(), parser: str = "auto"):
        if parser not in PARSERS:
            raise unknown_choice("MIDI parser", parser, PARSERS)
        if parser == "auto":
            parser = "symusic" if importlib.util.find_spec("symusic") else "miditoolkit"
        self.parser = parser
        self.cfg = cfg
        self.vocab = vocabulary(cfg)
        self.step_s = cfg.time_step_ms / 1000.0

    # ---- MIDI boundary ---------------------------------------------------------------------------
    def read_notes(self, midi: MidiSource) -> NotesRead:
        """Notes of a MIDI file (path or object) within the pitch range, cut at `max_seconds` if one is set,
        with the count of notes the cut removed, so that callers can say so. Notes over a limit of
        `budget.py` (hours of silence, millions of notes) raise `MidiReadError` with the reason, before any
        array is sized from their times."""
        if self.parser == "symusic" and not isinstance(midi, miditoolkit.MidiFile):
            events = midi_io.read_events_symusic(midi)
        else:
            events = midi_io.midi_to_events(midi_io.read_midi(midi))
        in_range = (events.pitch >= self.cfg.pitch_min) & (events.pitch <= self.cfg.pitch_max)
        events = events.select(in_range)
        kept = midi_io.cut_at(events, self.cfg.max_seconds)
        over = over_budget(kept)
        if over is not None:
            name = "the MIDI" if isinstance(midi, miditoolkit.MidiFile) else midi_io.shown(midi)
            raise midi_io.MidiReadError(
                f"{name}: {over[1]} (a broken file?); repair it or leave it out", over[0]
            )
        return NotesRead(kept, len(events) - len(kept))

    def midi_to_events(self, midi: MidiSource) -> Events:
        """The notes `read_notes` keeps."""
        return self.read_notes(midi).events

    def encode(self, midi: MidiSource, composer: str | None = None) -> np.ndarray:
        """A MIDI file as int32 token ids, conditioning prefix first and `end` last (all of its notes unless
        `max_seconds` is set; `read_notes` then tells how many the cut removed)."""
        return self.events_to_ids(self.midi_to_events(midi), composer)

    def decode(self, ids: np.ndarray) -> miditoolkit.MidiFile:
        """Any sequence of valid ids -> a MIDI file; unmatched note-ons are closed at the end."""
        return midi_io.events_to_midi(self.ids_to_events(ids))

    def to_strings(self, ids: np.ndarray) -> list[str]:
        return [self.vocab.string(i) for i in np.asarray(ids)]

    # ---- events <-> ids ---------------------------------------------------------------------------
    def prefix(self, composer: str | None, families: np.ndarray) -> np.ndarray:
        """`composer, instrument..., start` for the given family indices."""
        vocab = self.vocab
        instruments = [vocab.instrument_id(int(f)) for f in np.unique(families)]
        return np.array([vocab.composer_id(composer), *instruments, vocab.start_id], np.int32)

    def events_to_ids(self, events: Events, composer: str | None = None) -> np.ndarray:
        steps, tokens = self.timed_tokens(events)
        body = interleave_waits(steps, tokens, self.vocab, self.cfg.max_wait_steps)
        return np.concatenate([self.prefix(composer, events.family), body, [self.vocab.end_id]]).astype(
            np.int32
        )

    def timed_tokens(self, events: Events) -> tuple[np.ndarray, np.ndarray]:
        """(time step, note token) of every note-on and note-off of `events`, in the canonical order
        (by step; at one step note-offs before note-ons, each by id): the sequence before its waits."""
        vocab, step = self.vocab, self.step_s
        on_step = np.rint(events.start_s / step).astype(np.int64)
        off_step = np.maximum(np.rint(events.end_s / step).astype(np.int64), on_step + 1)
        bins = vocab.velocity_to_bin(events.velocity)
        melodic = events.family != DRUMS
        steps = np.concatenate([on_step, off_step[melodic]])
        tokens = np.concatenate(
            [
                vocab.note_ids(events.family, bins, events.pitch),
                vocab.note_ids(
                    events.family[melodic], np.zeros(melodic.sum(), np.int64), events.pitch[melodic]
                ),
            ]
        )
        is_on = np.concatenate([np.ones(len(events), np.int8), np.zeros(melodic.sum(), np.int8)])
        order = np.lexsort((tokens, is_on, steps))
        return steps[order], tokens[order]

    def ids_to_events(self, ids: np.ndarray) -> Events:
        """Notes of a token sequence: note-offs close the oldest open note of that family and pitch."""
        vocab = self.vocab
        ids = np.asarray(ids, np.int64)
        ids = ids[(ids >= 0) & (ids < vocab.size)]
        kinds = vocab.token_kinds[ids]
        step_at = token_times(ids, vocab)
        end_step = duration_steps(ids, vocab)
        notes = np.flatnonzero((kinds == KIND_NOTE_ON) | (kinds == KIND_NOTE_OFF))
        families, pitches, bins = (
            vocab.note_family[ids[notes]],
            vocab.note_pitch[ids[notes]],
            vocab.note_bin[ids[notes]],
        )
        open_notes: defaultdict[tuple[int, int], deque[int]] = defaultdict(deque)
        on_rows, off_steps = [], []
        for row, (family, pitch, vbin) in enumerate(zip(families.tolist(), pitches.tolist(), bins.tolist())):
            at = int(step_at[notes[row]])
            if vbin > 0:
                off_steps.append(at + 1 if family == DRUMS else -1)
                if family != DRUMS:
                    open_notes[(family, pitch)].append(len(on_rows))
                on_rows.append(row)
            elif open_notes[(family, pitch)]:
                note = open_notes[(family, pitch)].popleft()
                off_steps[note] = max(at, int(step_at[notes[on_rows[note]]]) + 1)
        on_rows_arr = np.asarray(on_rows, np.int64)
        starts = step_at[notes[on_rows_arr]] if len(on_rows) else np.zeros(0, np.int64)
        offs = np.asarray(off_steps, np.int64)
        offs = np.where(offs < 0, np.maximum(end_step, starts + 1), offs)  # close unmatched notes at the end
        drum = families[on_rows_arr] == DRUMS if len(on_rows) else np.zeros(0, bool)
        end_s = np.where(drum, starts * self.step_s + midi_io.DRUM_HIT_S, offs * self.step_s)
        return Events.from_columns(
            starts * self.step_s,
            end_s,
            families[on_rows_arr],
            pitches[on_rows_arr],
            vocab.bin_to_velocity(bins[on_rows_arr]),
        ).sorted()

    def composer_of(self, ids: np.ndarray) -> str | None:
        """Composer named by a sequence's first token, if it has one."""
        if len(ids) and self.vocab.token_kinds[ids[0]] == KIND_COMPOSER:
            return self.vocab.composers[int(ids[0]) - self.vocab.composer_base]
        return None

    def prefix_length(self, ids: np.ndarray) -> int:
        """Number of conditioning tokens (composer, instruments, the `anticipate` flag, start) at the head
        of `ids`."""
        kinds = self.vocab.token_kinds[np.asarray(ids[: 3 + len(self.vocab.families)])]
        n = 0
        while n < len(kinds) and kinds[n] in (KIND_COMPOSER, KIND_INSTRUMENT, KIND_ANTICIPATE):
            n += 1
        return n + int(n < len(ids) and int(ids[n]) == self.vocab.start_id)


def interleave_waits(steps: np.ndarray, tokens: np.ndarray, vocab: Vocabulary, max_wait: int) -> np.ndarray:
    """Event tokens with `wait:N` tokens (N <= max_wait) put before each event that is later than the last."""
    gaps = np.diff(steps, prepend=0)
    full, rest = gaps // max_wait, gaps % max_wait
    n_waits = full + (rest > 0)
    total = len(tokens) + int(n_waits.sum())
    out = np.empty(total, np.int64)
    event_pos = np.cumsum(n_waits) + np.arange(len(tokens))
    out[event_pos] = tokens
    owner = np.repeat(np.arange(len(tokens)), n_waits)
    first = np.cumsum(n_waits) - n_waits
    k = np.arange(len(owner)) - first[owner]
    wait_len = np.where(k < full[owner], max_wait, rest[owner])
    is_wait = np.ones(total, bool)
    is_wait[event_pos] = False
    out[is_wait] = vocab.wait_base + wait_len - 1
    return out
