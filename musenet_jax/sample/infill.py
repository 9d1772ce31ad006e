"""Fill a span of a piece or add parts to it, with a model trained with anticipation.

The user's MIDI file is the given material. Its notes become the sequence of `encoding/anticipation.py`:
for a span [a, b), the notes before it are the prompt's events (cut off at a) and the notes from b on
are controls; for accompaniment, every given note is a control. The prompt holds what lies before the
clock reaches a + delta; the rest of the given tokens are forced by the sampler at their times, and
sampling stops at b + delta (the piece's end for accompaniment). The output is the given MIDI file
itself, its notes untouched, plus tracks of the new notes: given notes never pass through tokens.
A run trained with `encoding.span_infill=fill_in_middle` is asked for a span in that order instead
(`fim_request`): the notes from b on first, then the piece up to a, and sampling stops at b.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Sequence

import miditoolkit
import numpy as np

from musenet_jax.encoding import fill_in_middle as fim
from musenet_jax.encoding import midi_io
from musenet_jax.encoding.anticipation import anticipated_prefix, split_anticipated, timeline
from musenet_jax.encoding.events import Events
from musenet_jax.encoding.families import DRUMS, FAMILIES, FAMILY_PROGRAM
from musenet_jax.encoding.tokenizer import Tokenizer, interleave_waits
from musenet_jax.errors import UserError
from musenet_jax.sample.conditioning import Request, parse_instruments


@dataclasses.dataclass(frozen=True)
class Given:
    """A piece to work in: its MIDI file (notes of a span to refill already removed), that file's notes as
    events, and where the new notes go, in time steps."""

    midi: miditoolkit.MidiFile
    events: Events
    start_step: int  # the first step new notes may start at
    stop_step: int  # where sampling stops


def read_piece(path: str | os.PathLike) -> miditoolkit.MidiFile:
    """The MIDI file to infill or accompany; one with no notes is one line."""
    midi = midi_io.read_midi(path)
    if not any(inst.notes for inst in midi.instruments):
        raise UserError(f"{midi_io.shown(path)}: the file has no notes to infill or accompany")
    return midi


def parse_span(text: str, flag: str) -> tuple[float, float]:
    """'12.0:20.0' -> (12.0, 20.0); anything else is one line saying what the flag takes."""
    try:
        start, end = (float(part) for part in text.split(":"))
    except ValueError:
        raise UserError(f"{flag} takes START:END, e.g. {flag} 12.0:20.0, not {text!r}") from None
    return start, end


def bar_span(
    midi: miditoolkit.MidiFile, first: float, last: float, path: str | os.PathLike
) -> tuple[float, float]:
    """Seconds from the start of bar `first` to the end of bar `last` (1-based, inclusive), by the file's
    tempo map and time signatures (4/4 until the first one)."""
    if not midi.tempo_changes:
        raise UserError(f"{midi_io.shown(path)} has no tempo map; give the span in seconds with --infill")
    if first != int(first) or last != int(last) or not 1 <= first <= last:
        raise UserError(
            f"--infill-bars takes whole bars FIRST:LAST with 1 <= FIRST <= LAST, not {first:g}:{last:g}"
        )
    signatures = sorted(midi.time_signature_changes, key=lambda s: s.time)
    if not signatures or signatures[0].time > 0:
        signatures.insert(0, miditoolkit.TimeSignature(4, 4, 0))
    bar_ticks, bar, tick = [], 1, 0
    for k, sig in enumerate(signatures):
        until = signatures[k + 1].time if k + 1 < len(signatures) else None
        length = midi.ticks_per_beat * 4 * sig.numerator // sig.denominator
        while (until is None or tick < until) and bar <= last + 1:
            bar_ticks.append(tick)
            tick, bar = tick + length, bar + 1
        if bar > last + 1:
            break
    seconds = _tick_seconds(midi, np.asarray([bar_ticks[int(first) - 1], bar_ticks[int(last)]]))
    return float(seconds[0]), float(seconds[1])


def _tick_seconds(midi: miditoolkit.MidiFile, ticks: np.ndarray) -> np.ndarray:
    """Seconds of `ticks`, past the file's last tick too (its last tempo goes on)."""
    mapping = np.asarray(midi.get_tick_to_time_mapping(), np.float64)
    tempo = midi.tempo_changes[-1].tempo if midi.tempo_changes else midi_io.TEMPO_BPM
    per_tick = 60.0 / (tempo * midi.ticks_per_beat)
    inside = np.clip(ticks, 0, len(mapping) - 1)
    return np.where(
        ticks < len(mapping), mapping[inside], mapping[-1] + (ticks - len(mapping) + 1) * per_tick
    )


def _seconds_ticks(midi: miditoolkit.MidiFile, seconds: np.ndarray) -> np.ndarray:
    """The first tick at or after each of `seconds`, past the file's last tick too."""
    mapping = np.asarray(midi.get_tick_to_time_mapping(), np.float64)
    tempo = midi.tempo_changes[-1].tempo if midi.tempo_changes else midi_io.TEMPO_BPM
    per_tick = 60.0 / (tempo * midi.ticks_per_beat)
    beyond = len(mapping) - 1 + np.ceil((seconds - mapping[-1]) / per_tick - 1e-9)
    return np.where(seconds > mapping[-1], beyond, np.searchsorted(mapping, seconds)).astype(np.int64)


def _piece_families(events: Events) -> list[str]:
    return [FAMILIES[f] for f in np.unique(events.family)]


def given_for_infill(
    tokenizer: Tokenizer, midi: miditoolkit.MidiFile, start_s: float, end_s: float, path: str | os.PathLike
) -> Given:
    """The piece without the notes that start in [start_s, end_s); a span that is empty or lies outside
    the piece is one line."""
    step = tokenizer.step_s
    events = tokenizer.midi_to_events(midi)
    piece_end = float(events.end_s.max()) if len(events) else 0.0
    start, stop = round(start_s / step), round(end_s / step)
    if not (0 <= start_s < end_s and start < stop) or start_s >= piece_end:
        raise UserError(
            f"span {start_s:g}:{end_s:g} s lies outside {midi_io.shown(path)} (its notes run from 0 to "
            f"{piece_end:.1f} s); give START:END with 0 <= START < END and START before the end"
        )
    kept = copy.deepcopy(midi)
    mapping = np.asarray(midi.get_tick_to_time_mapping(), np.float64)
    for inst in kept.instruments:
        onsets = np.array(
            [round(mapping[min(n.start, len(mapping) - 1)] / step) for n in inst.notes], np.int64
        )
        inst.notes = [n for n, on in zip(inst.notes, onsets) if not start <= on < stop]
    return Given(kept, tokenizer.midi_to_events(kept), start, stop)


def given_for_accompaniment(
    tokenizer: Tokenizer,
    midi: miditoolkit.MidiFile,
    instruments: str | Sequence[str],
    path: str | os.PathLike,
) -> tuple[Given, list[str]]:
    """The whole piece as given and the families to add; a family the piece already plays is one line."""
    new = parse_instruments(instruments)
    events = tokenizer.midi_to_events(midi)
    if not len(events):
        raise UserError(f"{midi_io.shown(path)}: no notes within the encoding's pitch range to accompany")
    present = _piece_families(events)
    already = [name for name in new if name in present]
    if already:
        raise UserError(
            f"{midi_io.shown(path)} already has {', '.join(already)}; --accompany adds families the piece "
            f"lacks (it has {', '.join(present)})"
        )
    stop = round(float(events.end_s.max()) / tokenizer.step_s)
    return Given(midi, events, 0, max(stop, 1)), new


def anticipated_request(
    tokenizer: Tokenizer, composer: str | None, given: Given, families: Sequence[str], allowed: Sequence[str]
) -> Request:
    """The prompt and forced tokens of `given`: its notes before `start_step` as events (cut off there),
    the others as controls (for accompaniment, with `start_step` 0, all of them); the prefix lists
    `families`, new notes may be of `allowed` families only, and those the given notes do not play are
    owed (grammar rule 12: they keep playing in the new music)."""
    vocab, step = tokenizer.vocab, tokenizer.step_s
    delta = vocab.anticipation_steps
    ev = given.events
    onset = np.rint(ev.start_s / step).astype(np.int64)
    before = ev.select(onset < given.start_step)
    before = before.replace(end_s=np.minimum(before.end_s, given.start_step * step))
    # A span's own notes are gone from `given`, so the rest are the notes from `stop_step` on.
    steps, tokens = timeline(tokenizer, before, ev.select(onset >= given.start_step))
    begin = given.start_step + delta
    head = steps < begin
    waits = interleave_waits(
        np.append(steps[head], begin),
        np.append(tokens[head], vocab.pad_id),
        vocab,
        tokenizer.cfg.max_wait_steps,
    )[:-1]  # the prompt's tokens and the waits up to where sampling begins
    prefix = anticipated_prefix(tokenizer, composer, np.array([FAMILIES.index(f) for f in families]))
    stop = given.stop_step + delta
    ok = np.zeros(len(FAMILIES), bool)
    ok[[FAMILIES.index(f) for f in allowed]] = True
    return Request(
        prompt=np.concatenate([prefix, waits]).astype(np.int32),
        prefix_length=len(prefix),
        target_steps=stop,
        piece_steps=max(stop, int(steps.max(initial=0)) + 1),
        families=ok,
        may_end=False,  # the given piece decides where it ends
        forced=tokens[~head].astype(np.int32),
        forced_at=steps[~head].astype(np.int32),
        owed=ok & ~np.isin(np.arange(len(FAMILIES)), ev.family),
    )


def fim_request(
    tokenizer: Tokenizer, composer: str | None, given: Given, families: Sequence[str], context: int
) -> Request:
    """The prompt of a span to fill for a run trained with `encoding.span_infill=fill_in_middle`: the
    prefix, the given notes from the span's end on (as much as `fim.suffix_tokens` holds), `fim:middle`,
    then the piece up to the span's start; sampling stops at the span's end. The sampler keeps the given
    part with the prefix when its window slides."""
    family_ids = np.array([FAMILIES.index(f) for f in families])
    limit = fim.suffix_tokens(context, len(tokenizer.prefix(composer, family_ids)))
    seq = fim.fim_sequence(
        tokenizer,
        given.events,
        given.start_step,
        given.stop_step,
        composer,
        suffix_limit=limit,
        families=family_ids,
    )
    prompt = seq.ids[: seq.span_at]
    ok = np.zeros(len(FAMILIES), bool)
    ok[family_ids] = True
    return Request(
        prompt=prompt.astype(np.int32),
        prefix_length=seq.head_length,
        target_steps=given.stop_step,
        piece_steps=seq.piece_steps,
        families=ok,
        may_end=False,
        owed=ok & ~np.isin(np.arange(len(FAMILIES)), given.events.family),
        times=fim.input_times(prompt, tokenizer, given.start_step),
    )


def new_notes(tokenizer: Tokenizer, ids: np.ndarray, start_step: int) -> Events:
    """The notes a candidate wrote: its events from `start_step` on, in piece time."""
    events, _ = split_anticipated(tokenizer, ids)
    return events.select(np.rint(events.start_s / tokenizer.step_s) >= start_step)


def with_new_notes(midi: miditoolkit.MidiFile, new: Events, label: str) -> miditoolkit.MidiFile:
    """A copy of `midi` with one added track per family of `new` (named `label: family`), on the file's
    own tempo map; its own tracks and notes are copied as they are."""
    out = copy.deepcopy(midi)
    for family in np.unique(new.family):
        rows = new.select(new.family == family)
        name = FAMILIES[int(family)]
        starts = _seconds_ticks(midi, rows.start_s)
        ends = np.maximum(_seconds_ticks(midi, rows.end_s), starts + 1)
        inst = miditoolkit.Instrument(
            program=FAMILY_PROGRAM[name], is_drum=bool(family == DRUMS), name=f"{label}: {name}"
        )
        inst.notes = [
            miditoolkit.Note(velocity=int(v), pitch=int(p), start=int(s), end=int(e))
            for v, p, s, e in zip(rows.velocity, rows.pitch, starts, ends)
        ]
        out.instruments.append(inst)
    out.max_tick = max([out.max_tick, *(n.end for inst in out.instruments for n in inst.notes)])
    return out


def given_and_new(given: Events, new: Events) -> Events:
    """The whole piece of a candidate: the given notes and the new ones, in time order."""
    return Events.from_columns(
        *(
            np.concatenate([getattr(given, c), getattr(new, c)])
            for c in ("start_s", "end_s", "family", "pitch", "velocity")
        )
    ).sorted()
