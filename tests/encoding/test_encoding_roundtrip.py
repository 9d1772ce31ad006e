"""Round-trip fidelity on real MIDI shipped with installed packages, and the token format itself."""

import numpy as np
import pytest
from midi_corpus import export_corpus_scores, packaged_midi_files

from musenet_jax.encoding.events import Events
from musenet_jax.encoding.fidelity import (
    matched_fraction,
    round_trip_fidelity,
    round_trip_report,
    unison_notes,
)
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.encoding.vocab import KIND_WAIT
from musenet_jax.errors import UserError


@pytest.fixture(scope="module")
def real_midi(tmp_path_factory):
    return packaged_midi_files() + export_corpus_scores(tmp_path_factory.mktemp("corpus"))


def test_round_trip_keeps_99_percent_of_notes(real_midi):
    tokenizer = Tokenizer()
    matched = total = 0
    for path in real_midi:
        fraction, n = round_trip_fidelity(tokenizer, path)
        matched += fraction * n
        total += n
    print(f"\nround-trip fidelity: {matched / total:.4%} of {total} notes in {len(real_midi)} files")
    assert len(real_midi) >= 25 and total > 10_000
    assert matched / total >= 0.99


def test_round_trip_keeps_note_ends_but_for_unisons(real_midi):
    tokenizer = Tokenizer()
    reports = [round_trip_report(tokenizer, path) for path in real_midi]
    notes = sum(r["notes"] for r in reports)
    ends_lost = sum((r["onsets"] - r["ends"]) * r["notes"] for r in reports)
    unisons = sum(r["unison_notes"] for r in reports)
    print(f"\nnote ends: {ends_lost:.0f} of {notes} notes changed length; {unisons} notes in unisons")
    assert ends_lost <= unisons  # a length changes only where two notes share a slot
    without_unisons = [r for r in reports if r["unison_notes"] == 0]
    assert len(without_unisons) >= 10 and all(r["ends"] == r["onsets"] for r in without_unisons)


def test_note_ends_are_scored_and_unisons_counted():
    tokenizer = Tokenizer()
    vocab = tokenizer.vocab
    # two piano C4s at once, the later one ending first: decoding closes the older note first
    notes = Events.from_columns([0.0, 0.5], [2.0, 1.0], [0, 0], [60, 60], [80, 80])
    decoded = tokenizer.ids_to_events(tokenizer.events_to_ids(notes))
    assert matched_fraction(notes, decoded, vocab) == 1.0  # onsets all kept
    assert matched_fraction(notes, decoded, vocab, ends=True) == 0.0  # both lengths swapped
    assert unison_notes(notes, tokenizer.step_s) == 2
    apart = Events.from_columns([0.0, 1.0], [0.5, 2.0], [0, 0], [60, 60], [80, 80])
    assert unison_notes(apart, tokenizer.step_s) == 0
    again = tokenizer.ids_to_events(tokenizer.events_to_ids(apart))
    assert matched_fraction(apart, again, vocab, ends=True) == 1.0


def test_sequence_layout(real_midi):
    tokenizer = Tokenizer()
    ids = tokenizer.encode(real_midi[0], composer="bach")
    strings = tokenizer.to_strings(ids)
    assert strings[0] == "composer:bach" and strings[1].startswith("instrument:") and "start" in strings[:12]
    assert strings[-1] == "end"
    assert ids.dtype == np.int32 and ids.max() < tokenizer.vocab.size
    waits = tokenizer.vocab.wait_steps[ids]
    assert waits.max() <= tokenizer.cfg.max_wait_steps
    assert np.all(tokenizer.vocab.token_kinds[ids][waits > 0] == KIND_WAIT)


def test_note_token_names_follow_musenet():
    tokenizer = Tokenizer()
    vocab = tokenizer.vocab
    assert vocab.string(vocab.note_ids(0, 3, 67)) == "piano:v3:G4"
    assert vocab.string(vocab.note_ids(0, 0, 60)) == "piano:v0:C4"
    assert vocab.id("wait:12") == vocab.wait_id(12)
    assert "drums:v0:C2" not in vocab.strings  # drums have note-ons only


def test_long_gaps_become_several_waits():
    tokenizer = Tokenizer()
    from musenet_jax.encoding.events import Events

    events = Events.from_columns([0.0, 5.0], [0.5, 5.5], [0, 0], [60, 62], [80, 80])
    ids = tokenizer.events_to_ids(events)
    waits = tokenizer.vocab.wait_steps[ids]
    assert waits.sum() == 550  # last note-off at 5.5 s = 550 steps of 10 ms
    assert waits.max() == 128
    decoded = tokenizer.ids_to_events(ids)
    np.testing.assert_allclose(decoded.start_s, [0.0, 5.0])
    np.testing.assert_allclose(decoded.end_s, [0.5, 5.5])


def test_unknown_composer_lists_the_valid_ones():
    with pytest.raises(UserError, match=r"unknown composer 'bahc'; valid: bach"):
        Tokenizer().encode(packaged_midi_files()[0], composer="bahc")


@pytest.mark.parametrize("parser", ["symusic", "miditoolkit"])
def test_a_midi_without_notes_is_prefix_and_end_and_decodes_to_an_empty_valid_file(parser, tmp_path):
    import miditoolkit

    miditoolkit.MidiFile().dump(tmp_path / "silence.mid")
    tokenizer = Tokenizer(parser=parser)
    ids = tokenizer.encode(tmp_path / "silence.mid", composer="bach")
    assert tokenizer.to_strings(ids) == ["composer:bach", "start", "end"]
    tokenizer.decode(ids).dump(tmp_path / "decoded.mid")
    reread = miditoolkit.MidiFile(tmp_path / "decoded.mid")
    assert sum(len(track.notes) for track in reread.instruments) == 0
    np.testing.assert_array_equal(tokenizer.encode(tmp_path / "decoded.mid", composer="bach"), ids)
