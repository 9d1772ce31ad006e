"""Anticipation (Thickstun et al., "Anticipatory Music Transformer", TMLR 2024) in the MuseNet encoding.

Some notes are given (controls): the notes of a span around the one to fill, or of the families to
accompany. The model writes the others (events) knowing each control `delta` = `encoding.anticipation_s`
before its time. One clock of wait tokens carries both streams:

    composer, instruments..., anticipate, start, <controls and events with waits>, end

A control token `ctl:piano:v3:G4` stands at the time its note starts (`ctl:piano:v0:G4` where it ends;
drums have no control note-off), while events run `delta` behind the clock: an event at clock step T
is a note at T - delta. So every control appears exactly `delta` before the events of its time, as in
AMT; a wait is split where a control falls. At one step controls come first (note-offs, then note-ons,
each by id), then events (note-offs, then note-ons); with `encoding.anticipation_order: events_first` the
events come first, so a step's events follow its wait exactly as in a plain sequence. The `anticipate`
flag (in the prefix, kept at the head of every window) tells such a sequence from a plain one, which has
neither flag nor shift.
Dropping the controls and the flag, merging the waits and moving back by `delta` gives the plain
sequence of the events.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.encoding.events import Events
from musenet_jax.encoding.timing import token_times
from musenet_jax.encoding.tokenizer import Tokenizer, interleave_waits
from musenet_jax.encoding.vocab import (
    KIND_CONTROL_OFF,
    KIND_CONTROL_ON,
    KIND_NOTE_OFF,
    KIND_NOTE_ON,
    Vocabulary,
)
from musenet_jax.errors import UserError

# The training mix of `training_ids` (AMT trains on plain, span and instrument anticipation alike).
PLAIN_SHARE = 0.2  # plain sequences, no controls
SPAN_SHARE = 0.2  # the notes of one random span become controls
# An infilling request as `generate --infill` asks it: the notes from a random time on are controls and
# the events stop there. Without it the model only ever saw a family's controls where that family's
# events were absent, and it learned to expect no more of them once the given notes came into view.
INFILL_SHARE = 0.3
SPAN_SECONDS = 8.0  # a span lasts 0.5x to 1.5x this
# The rest: accompaniment (a random proper subset of the families present becomes controls).
ACCOMPANIMENT_SHARE = 1.0 - PLAIN_SHARE - SPAN_SHARE - INFILL_SHARE


def plain_encoding(cfg: EncodingConfig) -> EncodingConfig:
    """The encoding without anticipation: the one datasets are stored in (the pipeline anticipates)."""
    return dataclasses.replace(
        cfg, anticipation_s=0.0, anticipation_order="controls_first", span_infill="anticipation"
    )


def require_anticipation(vocab: Vocabulary) -> None:
    """Refuses, in one line, to infill or accompany with a model trained without anticipation."""
    if not vocab.anticipates:
        raise UserError(
            "this model was trained without anticipation and cannot infill or accompany "
            "(train one with --set encoding.anticipation_s=5, or fine-tune this one into it: "
            "`train --init-from MODEL --set encoding.anticipation_s=5`)"
        )


def is_control(ids: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    kinds = vocab.token_kinds[np.asarray(ids)]
    return (kinds == KIND_CONTROL_ON) | (kinds == KIND_CONTROL_OFF)


def timeline(tokenizer: Tokenizer, events: Events, controls: Events) -> tuple[np.ndarray, np.ndarray]:
    """(clock step, token) of every event and control token in the canonical order, before waits."""
    vocab = tokenizer.vocab
    event_steps, event_tokens = tokenizer.timed_tokens(events)
    control_steps, control_notes = tokenizer.timed_tokens(controls)
    steps = np.concatenate([control_steps, event_steps + vocab.anticipation_steps])
    tokens = np.concatenate([control_notes + vocab.control_shift, event_tokens]).astype(np.int64)
    is_on = np.isin(vocab.token_kinds[tokens], (KIND_NOTE_ON, KIND_CONTROL_ON))
    controls_first = tokenizer.cfg.anticipation_order == "controls_first"
    is_later = np.concatenate(
        [np.full(len(control_notes), not controls_first), np.full(len(event_tokens), controls_first)]
    )
    group = 2 * is_later.astype(int) + is_on
    order = np.lexsort((tokens, group, steps))
    return steps[order], tokens[order]


def anticipated_prefix(tokenizer: Tokenizer, composer: str | None, families: np.ndarray) -> np.ndarray:
    """`composer, instruments..., anticipate, start` (the instruments of events and controls alike)."""
    plain = tokenizer.prefix(composer, families)
    return np.concatenate([plain[:-1], [tokenizer.vocab.anticipate_id], plain[-1:]]).astype(np.int32)


def anticipated_ids(
    tokenizer: Tokenizer, events: Events, controls: Events, composer: str | None = None
) -> np.ndarray:
    """The whole anticipated sequence of `events` with `controls` given, prefix first, `end` last."""
    vocab = tokenizer.vocab
    steps, tokens = timeline(tokenizer, events, controls)
    families = np.concatenate([events.family, controls.family])
    body = interleave_waits(steps, tokens, vocab, tokenizer.cfg.max_wait_steps)
    prefix = anticipated_prefix(tokenizer, composer, families)
    return np.concatenate([prefix, body, [vocab.end_id]]).astype(np.int32)


def split_anticipated(tokenizer: Tokenizer, ids: np.ndarray) -> tuple[Events, Events]:
    """(events, controls) of an anticipated sequence, both in piece time (events moved back by `delta`);
    a plain sequence (no `anticipate` flag) is all events, unshifted."""
    vocab = tokenizer.vocab
    ids = np.asarray(ids, np.int64)
    events = tokenizer.ids_to_events(ids)  # control tokens carry no note and no time: invisible here
    if not vocab.anticipates or vocab.anticipate_id not in ids:
        return events, Events.empty()
    shift = vocab.anticipation_steps * tokenizer.step_s
    events = events.replace(start_s=events.start_s - shift, end_s=events.end_s - shift)
    kinds = vocab.token_kinds[ids]
    notes = (kinds == KIND_NOTE_ON) | (kinds == KIND_NOTE_OFF)
    as_notes = np.where(is_control(ids, vocab), ids - vocab.control_shift, np.where(notes, vocab.pad_id, ids))
    return events, tokenizer.ids_to_events(as_notes)


def random_controls(events: Events, rng: np.random.Generator, spans: bool = True) -> tuple[np.ndarray, bool]:
    """(bool [N]: which notes one training sequence gives as controls, whether it is an infilling
    request). None given: a plain sequence. An infilling request gives the notes from a random onset on;
    a span, the notes of about `SPAN_SECONDS`; accompaniment, a random proper subset of the families
    present (a piece with one family gets a span instead). Without `spans` (a run that fills spans in
    the middle, `encoding/fill_in_middle.py`), plain and accompaniment only, in the mix's proportion."""
    none = np.zeros(len(events), bool)
    draw = rng.random()
    if not spans:
        families = np.unique(events.family)
        if draw < PLAIN_SHARE / (PLAIN_SHARE + ACCOMPANIMENT_SHARE) or len(families) < 2:
            return none, False
        given = rng.choice(families, size=int(rng.integers(1, len(families))), replace=False)
        return np.isin(events.family, given), False
    if draw < PLAIN_SHARE or not len(events):
        return none, False
    if draw < PLAIN_SHARE + INFILL_SHARE:
        onsets = np.unique(events.start_s)
        if len(onsets) < 2:
            return none, False
        boundary = onsets[int(rng.integers(1, len(onsets)))]  # at least one onset stays an event
        return events.start_s >= boundary, True
    families = np.unique(events.family)
    if draw < PLAIN_SHARE + INFILL_SHARE + SPAN_SHARE or len(families) < 2:
        length = SPAN_SECONDS * rng.uniform(0.5, 1.5)
        start = rng.uniform(0.0, max(float(events.start_s.max()) - length, 0.0))
        return (events.start_s >= start) & (events.start_s < start + length), False
    given = rng.choice(families, size=int(rng.integers(1, len(families))), replace=False)
    return np.isin(events.family, given), False


def infilling_request_ids(
    tokenizer: Tokenizer, events: Events, controls: Events, composer: str | None
) -> tuple[np.ndarray, int]:
    """The sequence `generate --infill` samples into, written out for training: the events before the
    first control (held notes cut there, as a request cuts them) and every control after it, to the
    piece's end; and where a training row of it ends: after the last token before the clock passes the
    first control's time + delta, where a request stops. The whole piece stays in the sequence so that
    its length (the countdown embedding's) is the piece's, as in a request."""
    boundary = float(controls.start_s.min())
    events = events.replace(end_s=np.minimum(events.end_s, boundary))
    ids = anticipated_ids(tokenizer, events, controls, composer)
    stop = round(boundary / tokenizer.step_s) + tokenizer.vocab.anticipation_steps
    return ids, int(np.searchsorted(token_times(ids, tokenizer.vocab), stop, side="right"))


def training_ids(
    tokenizer: Tokenizer, ids: np.ndarray, rng: np.random.Generator, spans: bool = True
) -> tuple[np.ndarray, int | None]:
    """A stored (plain) piece as one training sequence of the mix, with the same composer: plain,
    infilling request, span or accompaniment (without `spans`: plain or accompaniment); and, for an
    infilling request, where its training row must end (its point: the events meeting the given notes);
    None: a row may be cropped anywhere."""
    events = tokenizer.ids_to_events(ids)
    given, request = random_controls(events, rng, spans)
    if not given.any():
        return np.asarray(ids, np.int32), None
    composer = tokenizer.composer_of(ids)
    if request:
        return infilling_request_ids(tokenizer, events.select(~given), events.select(given), composer)
    return anticipated_ids(tokenizer, events.select(~given), events.select(given), composer), None
