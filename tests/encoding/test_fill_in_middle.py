"""Fill in the middle in time (`encoding/fill_in_middle.py`): the given rest of a piece first, then the piece
through the span, on real MIDI; the clock, the rows, the vocabulary switch."""

import dataclasses

import numpy as np
import pytest
from midi_corpus import concatenate_in_time, export_corpus_scores

from musenet_jax.encoding import fill_in_middle as fim
from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.encoding.slots import held_before, note_slots
from musenet_jax.encoding.timing import duration_steps, token_times
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.encoding.vocab import Vocabulary
from musenet_jax.train.init_from import vocab_rows

FIM = EncodingConfig(anticipation_s=5.0, span_infill="fill_in_middle")


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(FIM)


@pytest.fixture(scope="module")
def events(tmp_path_factory, tokenizer):
    """About 30 s of a real chorale on piano, with a drum track on its onsets."""
    root = tmp_path_factory.mktemp("fim")
    scores = export_corpus_scores(root / "scores", ("bach/bwv66.6",))
    path = concatenate_in_time(scores, root / "piece.mid", minutes=0.5, with_drums=True)
    return tokenizer.midi_to_events(path)


def onsets(tokenizer, events):
    return np.rint(events.start_s / tokenizer.step_s).astype(int)


def test_the_stream_is_the_piece_before_the_span_end_and_the_given_part_the_rest(tokenizer, events):
    vocab = tokenizer.vocab
    start, stop = 1000, 1800
    seq = fim.fim_sequence(tokenizer, events, start, stop, "bach")
    ids = seq.ids
    assert ids[seq.n_prefix] == vocab.fim_suffix_id and ids[seq.middle_at] == vocab.fim_middle_id
    # the stream decodes to exactly the notes that start before the span's end, cut there
    on = onsets(tokenizer, events)
    before = events.select(on < stop)
    decoded = tokenizer.ids_to_events(ids)
    assert len(decoded) == len(before)
    np.testing.assert_array_equal(np.sort(onsets(tokenizer, decoded)), np.sort(on[on < stop]))
    assert decoded.end_s.max() <= stop * tokenizer.step_s + 1e-9
    # the given part, read as notes and moved to the span's start, is exactly the rest of the piece
    given = ids[seq.n_prefix + 1 : seq.middle_at]
    as_notes = np.where(given >= vocab.control_base, given - vocab.control_shift, given)
    rest = tokenizer.ids_to_events(np.concatenate([tokenizer.prefix("bach", events.family), as_notes]))
    after = events.select(on >= stop)
    np.testing.assert_array_equal(np.sort(onsets(tokenizer, rest) + start), np.sort(on[on >= stop]))
    np.testing.assert_array_equal(np.sort(rest.pitch), np.sort(after.pitch))
    # the span starts at `start`: its tokens' clock is in [start, stop), the stream's before it below
    times = token_times(ids, vocab)
    assert times[seq.span_at] >= start and times[seq.span_at - 1] < start
    assert times[-1] < stop and times[-1] + vocab.wait_steps[ids[-1]] == stop == duration_steps(ids, vocab)
    assert seq.piece_steps == round(events.end_s.max() / tokenizer.step_s)


def test_the_models_clock_puts_the_given_part_after_the_span_start(tokenizer, events):
    vocab = tokenizer.vocab
    start, stop = 1000, 1800
    seq = fim.fim_sequence(tokenizer, events, start, stop, "bach")
    times = fim.input_times(seq.ids, tokenizer, start)
    given = np.arange(len(seq.ids))
    given = (given > seq.n_prefix) & (given < seq.middle_at) & (seq.ids >= vocab.control_base)
    first_on = times[given][0]
    assert first_on == onsets(tokenizer, events)[onsets(tokenizer, events) >= stop].min()
    stream = np.arange(len(seq.ids)) > seq.middle_at
    plain = tokenizer.events_to_ids(events.select(onsets(tokenizer, events) < stop), "bach")
    assert times[stream].max() < stop and token_times(plain, vocab).max() >= times[stream].max()


def test_a_row_keeps_the_head_and_the_spans_surroundings_and_counts_only_the_stream(tokenizer, events):
    vocab, slots = tokenizer.vocab, note_slots(tokenizer.vocab)
    seq = fim.fim_sequence(tokenizer, events, 1500, 2300, "bach")
    row = fim.fim_row(seq, tokenizer, 256, slots)
    take = row["take"]
    head = take[take <= seq.middle_at]
    assert len(head) == seq.n_prefix + 1 + fim.suffix_tokens(256, seq.n_prefix) + 1 <= 256 // 4
    window = take[take > seq.middle_at]
    assert window[0] < seq.span_at <= window[-1] and np.all(np.diff(window) == 1)
    assert (window >= seq.span_at).sum() <= 257 // 2 + 1
    targets = row["targets"][: len(take) - 1]
    assert not row["counted"][len(head) - 2 : len(head) - 1].any()  # fim:middle is given
    assert row["counted"][len(head) - 1 : len(take) - 1].all()
    assert not np.any(row["counted"][: len(take) - 1] & (targets >= vocab.control_base))
    assert row["counted"][: seq.n_prefix - 1].all()  # the prefix's own targets count, as in a plain row
    np.testing.assert_array_equal(row["sounding_head"], held_before(seq.ids, int(window[0]), slots))
    assert row["durations"] == seq.piece_steps


def test_the_switch_keeps_every_other_vocabulary_and_needs_anticipation():
    off = Vocabulary(EncodingConfig(anticipation_s=5.0))
    on = Vocabulary(FIM)
    assert on.size == off.size + 2 and on.strings[: off.size] == off.strings
    assert on.strings[-2:] == ("fim:suffix", "fim:middle")
    assert off.fingerprint() == Vocabulary(dataclasses.replace(FIM, span_infill="anticipation")).fingerprint()
    assert on.fingerprint() != off.fingerprint()
    with pytest.raises(ValueError, match="anticipation_s"):
        EncodingConfig(span_infill="fill_in_middle")
    with pytest.raises(ValueError, match="span_infill must be one of"):
        EncodingConfig(anticipation_s=5.0, span_infill="middle")


def test_fine_tuning_an_anticipation_model_starts_the_markers_from_its_flag():
    base, new = Vocabulary(EncodingConfig(anticipation_s=5.0)), Vocabulary(FIM)
    rows = vocab_rows(base, new)
    np.testing.assert_array_equal(rows[: base.size], np.arange(base.size))
    assert rows[new.fim_suffix_id] == rows[new.fim_middle_id] == base.anticipate_id
