"""Anticipation's sequence format: the switch off changes nothing, controls stand delta ahead of the
events of their time, and both streams decode back to the notes they came from."""

import numpy as np
import pytest
from midi_corpus import export_corpus_scores

from musenet_jax.encoding.anticipation import (
    anticipated_ids,
    is_control,
    split_anticipated,
    training_ids,
)
from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.encoding.events import Events
from musenet_jax.encoding.timing import duration_steps, token_times
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.encoding.vocab import KIND_CONTROL_ON, KIND_NOTE_OFF, KIND_NOTE_ON, Vocabulary

# The plain vocabulary's fingerprint as every run, checkpoint and bundle made before anticipation records
# it: the switch off must leave it as it was, or none of them loads.
PLAIN_FINGERPRINT = "2e4290744e4007fd1ea4800df659233042f4b7d113a2e2ea1c7f8f69913e8a65"
DELTA_S = 1.0


@pytest.fixture(scope="module", params=["controls_first", "events_first"])
def tokenizer(request):
    return Tokenizer(EncodingConfig(anticipation_s=DELTA_S, anticipation_order=request.param))


@pytest.fixture(scope="module")
def notes(tokenizer, tmp_path_factory):
    """A real four-part chorale: several families after a program change, so accompaniment has a choice."""
    [path] = export_corpus_scores(tmp_path_factory.mktemp("scores"), ("bach/bwv66.6",))
    events = tokenizer.midi_to_events(path)
    return events.replace(family=(np.arange(len(events)) % 3).astype(np.int8))  # piano, strings, winds


def same_notes(a, b):
    assert len(a) == len(b)
    for column in ("family", "pitch", "velocity"):
        np.testing.assert_array_equal(getattr(a, column), getattr(b, column))
    np.testing.assert_allclose(a.start_s, b.start_s, atol=1e-9)
    np.testing.assert_allclose(a.end_s, b.end_s, atol=1e-9)


def test_switch_off_keeps_vocabulary_and_fingerprint_switch_on_extends_them():
    off, on = Vocabulary(EncodingConfig()), Vocabulary(EncodingConfig(anticipation_s=5.0))
    assert off.fingerprint() == PLAIN_FINGERPRINT
    assert "anticipate" not in off.strings and "anticipate" not in off.groups()
    assert on.fingerprint() != off.fingerprint()
    assert on.strings[: off.size] == off.strings  # every plain id means the same with the switch on
    assert on.size == off.size + 1 + (off.size - off.note_base)
    assert on.string(on.note_base + on.control_shift) == "ctl:" + on.string(on.note_base)
    assert on.groups()["control_on"] == on.groups()["note_on"]
    assert Vocabulary(EncodingConfig(anticipation_s=4.0)).fingerprint() != on.fingerprint()
    # The order of a step's controls and events changes what a sequence means, so it is fingerprinted; the
    # first order keeps the fingerprint every anticipation run and the bundled model were made with (the
    # bundled model's tests load it).
    events_first = Vocabulary(EncodingConfig(anticipation_s=5.0, anticipation_order="events_first"))
    assert events_first.strings == on.strings and events_first.fingerprint() != on.fingerprint()


def test_controls_stand_delta_ahead_of_the_events_of_their_time(tokenizer, notes):
    vocab, step = tokenizer.vocab, tokenizer.step_s
    given = notes.start_s >= 3.0
    ids = anticipated_ids(tokenizer, notes.select(~given), notes.select(given), "bach")
    prefix = tokenizer.prefix_length(ids)
    assert tokenizer.to_strings(ids[:prefix])[-2:] == ["anticipate", "start"]
    clock = token_times(ids, vocab)
    controls = is_control(ids, vocab)
    kinds = vocab.token_kinds[ids]
    events = (kinds == KIND_NOTE_ON) | (kinds == KIND_NOTE_OFF)
    # A control note-on stands at its note's own start on the clock ...
    control_ons = np.flatnonzero(kinds == KIND_CONTROL_ON)
    control_starts = np.sort(np.rint(notes.select(given).start_s / step)).astype(int)
    assert len(control_ons) == len(control_starts)
    np.testing.assert_array_equal(np.sort(clock[control_ons]), control_starts)
    # ... while an event stands delta later than its note: the first event note-on is the first note's.
    first_event_on = np.flatnonzero(events & (kinds == KIND_NOTE_ON))[0]
    delta = vocab.anticipation_steps
    assert clock[first_event_on] == round(notes.start_s.min() / step) + delta
    # At one step: controls first, then events (or the other way round, as the encoding says); each group
    # note-offs before note-ons.
    body = np.arange(len(ids)) >= prefix
    later = events if tokenizer.cfg.anticipation_order == "controls_first" else controls
    for t in np.unique(clock[body & (controls | events)]):
        at = np.flatnonzero(body & (clock == t) & (controls | events))
        order = 2 * later[at] + np.isin(kinds[at], (KIND_NOTE_ON, KIND_CONTROL_ON))
        assert np.all(np.diff(order) >= 0), tokenizer.to_strings(ids[at])
        assert np.all(np.diff(ids[at])[np.diff(order) == 0] > 0)


def test_both_streams_round_trip(tokenizer, notes):
    given = notes.family == 1
    ids = anticipated_ids(tokenizer, notes.select(~given), notes.select(given), "bach")
    events, controls = split_anticipated(tokenizer, ids)
    plain = lambda ev: tokenizer.ids_to_events(tokenizer.events_to_ids(ev))  # noqa: E731
    same_notes(events, plain(notes.select(~given)))
    same_notes(controls, plain(notes.select(given)))
    # Dropping controls and the flag leaves the plain sequence of the events delta later.
    vocab = tokenizer.vocab
    stripped = ids[~is_control(ids, vocab) & (ids != vocab.anticipate_id)]
    later = notes.select(~given)
    later = later.replace(start_s=later.start_s + DELTA_S, end_s=later.end_s + DELTA_S)
    np.testing.assert_array_equal(
        tokenizer.ids_to_events(stripped).start_s.round(6), plain(later).start_s.round(6)
    )


def test_training_mix_keeps_every_note_and_has_all_four_kinds(tokenizer, notes):
    piece = tokenizer.events_to_ids(notes, "bach")
    whole = tokenizer.ids_to_events(piece)
    columns = ("start_s", "end_s", "family", "pitch", "velocity")
    kinds = set()
    for seed in range(40):
        ids, row_end = training_ids(tokenizer, piece, np.random.default_rng(seed))
        assert tokenizer.composer_of(ids) == "bach"
        events, controls = split_anticipated(tokenizer, ids)
        if row_end is not None:
            kinds.add("request")
            check_infilling_request(tokenizer, ids, row_end, events, controls, whole)
            continue
        if not len(controls):
            kinds.add("plain")
            np.testing.assert_array_equal(ids, piece)
            continue
        kinds.add("accompaniment" if not np.intersect1d(events.family, controls.family).size else "span")
        merged = Events.from_columns(
            *(np.concatenate([getattr(events, c), getattr(controls, c)]).round(9) for c in columns)
        ).sorted()  # rounded: the events' shift back by delta leaves float dust that could reorder ties
        same_notes(merged, whole)
    assert kinds == {"plain", "request", "span", "accompaniment"}


def check_infilling_request(tokenizer, ids, row_end, events, controls, whole):
    """What `generate --infill` samples into: every note before the boundary as an event (cut there), every
    note from it on as a control, so the sequence lasts as long as the piece; its row ends where a request
    stops sampling, delta after the boundary."""
    vocab, step = tokenizer.vocab, tokenizer.step_s
    boundary = controls.start_s.min()
    before = whole.select(whole.start_s < boundary - 1e-9)
    same_notes(events.sorted(), before.replace(end_s=np.minimum(before.end_s, boundary)).sorted())
    np.testing.assert_allclose(
        np.sort(controls.start_s), np.sort(whole.start_s[whole.start_s >= boundary - 1e-9]), atol=1e-9
    )
    clock = token_times(ids, vocab)
    stop = round(boundary / step) + vocab.anticipation_steps
    assert clock[:row_end].max() <= stop
    assert row_end == len(ids) or clock[row_end] > stop  # the piece may end first
    assert duration_steps(ids, vocab) >= round(whole.end_s.max() / step)
