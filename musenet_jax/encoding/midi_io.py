"""The boundary with MIDI objects: miditoolkit in, miditoolkit out; nothing else touches MIDI files."""

from __future__ import annotations

import io
import os
import pathlib

import miditoolkit
import numpy as np
import symusic

from musenet_jax.encoding.budget import MAX_FILE_BYTES
from musenet_jax.encoding.events import Events
from musenet_jax.encoding.families import DRUMS, FAMILIES, FAMILY_PROGRAM, family_of
from musenet_jax.errors import UserError

TICKS_PER_BEAT = 500  # with 120 bpm, one tick is exactly one millisecond
TEMPO_BPM = 120.0
DRUM_HIT_S = 0.1  # drums have note-on tokens only; decoded hits last this long


class MidiReadError(UserError):
    """A file that is not a readable MIDI file; the message names the file and the reason.

    `reason` is a short code (missing, unreadable, empty, not_midi, corrupt, or a limit of `budget.py`:
    too_large, too_many_notes, too_long, long_silence) that reports group files by.
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def shown(path: str | os.PathLike) -> str:
    """A path as printable text: bytes of a name that is not UTF-8 appear as `\\xNN`."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _unreadable(path: pathlib.Path, why: str) -> MidiReadError:
    return MidiReadError(f"{shown(path)}: unreadable: {why}", "unreadable")


def read_midi_bytes(path: pathlib.Path) -> bytes:
    """The bytes of a MIDI file after the checks both parsers share, so a bad file gets the same reason
    whichever parser reads it; every OS failure (permission, broken link, a FIFO) is one reasoned line."""
    if path.is_symlink() and not path.exists():
        raise _unreadable(path, "broken symbolic link")
    if not path.exists():
        raise MidiReadError(f"{shown(path)}: no such file", "missing")
    if path.is_dir():
        raise _unreadable(path, "a folder, not a file")
    if not path.is_file():
        raise _unreadable(path, "not a regular file (a pipe, socket or device)")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise _unreadable(path, (err.strerror or type(err).__name__).lower()) from None
    if size > MAX_FILE_BYTES:
        raise MidiReadError(
            f"{shown(path)}: {size / 2**20:.0f} MiB, over the limit of {MAX_FILE_BYTES / 2**20:.0f} MiB "
            "for one MIDI file; split it or leave it out",
            "too_large",
        )
    try:
        data = path.read_bytes()
    except OSError as err:
        raise _unreadable(path, (err.strerror or type(err).__name__).lower()) from None
    if not data:
        raise MidiReadError(f"{shown(path)}: empty file", "empty")
    if data[:4] != b"MThd":
        raise MidiReadError(f"{shown(path)}: not a MIDI file (no MThd header)", "not_midi")
    return data


def _parse_failure(path: pathlib.Path, err: Exception) -> MidiReadError:
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return MidiReadError(f"{shown(path)}: corrupt MIDI ({reason})", "corrupt")


def read_midi(source: str | os.PathLike | miditoolkit.MidiFile) -> miditoolkit.MidiFile:
    """Parses a MIDI file, turning every parser failure into one `MidiReadError` line."""
    if isinstance(source, miditoolkit.MidiFile):
        return source
    path = pathlib.Path(source)
    data = read_midi_bytes(path)
    try:
        return miditoolkit.MidiFile(file=io.BytesIO(data))
    except Exception as err:  # mido raises many types (EOFError, OSError, KeyError, ValueError...)
        raise _parse_failure(path, err) from None


def midi_to_events(midi: miditoolkit.MidiFile) -> Events:
    """All notes of all tracks with times in seconds (tempo map applied)."""
    if midi.max_tick <= 0 or not any(inst.notes for inst in midi.instruments):
        return Events.empty()
    columns: list[tuple[np.ndarray, ...]] = []
    for inst in midi.instruments:
        if not inst.notes:
            continue
        raw = np.array([(n.start, n.end, n.pitch, n.velocity) for n in inst.notes], dtype=np.int64)
        family = np.full(len(raw), family_of(inst.program, inst.is_drum), np.int8)
        starts, ends = _tick_seconds(midi, raw[:, 0]), _tick_seconds(midi, raw[:, 1])
        columns.append((starts, ends, family, raw[:, 2], raw[:, 3]))
    return _sounding(Events.from_columns(*(np.concatenate(c) for c in zip(*columns))))


def _tick_seconds(midi: miditoolkit.MidiFile, ticks: np.ndarray) -> np.ndarray:
    """miditoolkit's tick -> seconds mapping (`get_tick_to_time_mapping`) at the given ticks only: that one
    is an array of `max_tick` entries, which a hostile file makes billions long (`budget.py`)."""
    changes = midi.tempo_changes
    ticks = np.clip(ticks, 0, midi.max_tick)
    if not changes:
        return np.zeros(len(ticks))
    begin = np.array([c.time for c in changes], np.int64)
    per_tick = 60.0 / np.array([c.tempo for c in changes], np.float64) / float(midi.ticks_per_beat)
    at_begin = np.concatenate([[0.0], np.cumsum(per_tick[:-1] * np.diff(begin))])
    segment = np.searchsorted(begin, ticks, side="right") - 1
    inside = np.maximum(segment, 0)
    seconds = at_begin[inside] + per_tick[inside] * (ticks - begin[inside])
    return np.where(segment >= 0, seconds, 0.0)


def read_events_symusic(path: str | os.PathLike) -> Events:
    """The same notes as `midi_to_events(read_midi(path))`, parsed by symusic (C++, ~10x faster).

    symusic gets the bytes, not the path: it cannot open a file whose name is not UTF-8."""
    path = pathlib.Path(path)
    data = read_midi_bytes(path)
    try:
        score = symusic.Score.from_midi(data).to("second")
    except Exception as err:  # symusic raises RuntimeError / ValueError on malformed files
        raise _parse_failure(path, err) from None
    columns = []
    for track in score.tracks:
        notes = track.notes.numpy()
        if len(notes["time"]) == 0:
            continue
        start = notes["time"].astype(np.float64)
        family = np.full(len(start), family_of(track.program, track.is_drum), np.int8)
        columns.append((start, start + notes["duration"], family, notes["pitch"], notes["velocity"]))
    if not columns:
        return Events.empty()
    return _sounding(Events.from_columns(*(np.concatenate(c) for c in zip(*columns))))


def _sounding(events: Events) -> Events:
    """Drops silent (velocity 0) notes, note-offs in disguise; a note may not end before it starts."""
    events = events.select(events.velocity > 0)
    return events.replace(end_s=np.maximum(events.end_s, events.start_s)).sorted()


def cut_at(events: Events, max_seconds: float | None) -> Events:
    """The notes that start before `max_seconds` (None: all), none sounding past it."""
    if max_seconds is None:
        return events
    events = events.select(events.start_s < max_seconds)
    return events.replace(end_s=np.minimum(events.end_s, max_seconds))


def events_to_midi(events: Events) -> miditoolkit.MidiFile:
    """One track per family present, written with a fixed tempo so one tick is one millisecond."""
    midi = miditoolkit.MidiFile(ticks_per_beat=TICKS_PER_BEAT)
    midi.tempo_changes = [miditoolkit.TempoChange(TEMPO_BPM, 0)]
    ticks_per_s = TICKS_PER_BEAT * TEMPO_BPM / 60.0
    for family in np.unique(events.family):
        rows = events.select(events.family == family)
        name = FAMILIES[family]
        inst = miditoolkit.Instrument(program=FAMILY_PROGRAM[name], is_drum=family == DRUMS, name=name)
        starts = np.rint(rows.start_s * ticks_per_s).astype(np.int64)
        ends = np.maximum(np.rint(rows.end_s * ticks_per_s).astype(np.int64), starts + 1)
        inst.notes = [
            miditoolkit.Note(velocity=int(v), pitch=int(p), start=int(s), end=int(e))
            for v, p, s, e in zip(rows.velocity, rows.pitch, starts, ends)
        ]
        midi.instruments.append(inst)
    midi.max_tick = max((n.end for inst in midi.instruments for n in inst.notes), default=0)
    return midi
