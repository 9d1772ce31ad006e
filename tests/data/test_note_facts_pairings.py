"""The note facts count which instrument families each composer's training pieces carry, and `generate`'s
note names a requested pairing the data rarely or never shows (`data/note_facts.py`)."""

from __future__ import annotations

import pathlib

from midi_corpus import export_corpus_scores

from musenet_jax.data.note_facts import NoteFacts, note_facts, pairing_note
from musenet_jax.encoding.families import FAMILIES
from musenet_jax.encoding.tokenizer import Tokenizer


def test_pairings_are_counted_and_a_missing_one_is_named(tmp_path: pathlib.Path):
    tokenizer = Tokenizer()
    (chorale,) = export_corpus_scores(tmp_path, ("bach/bwv66.6",))  # four parts, exported as piano
    bach = tokenizer.encode(chorale, "bach")
    facts = note_facts(tokenizer, [bach, bach, bach])
    assert facts.pairing("bach", FAMILIES.index("piano")) == (3, 3)
    assert facts.pairing("bach", FAMILIES.index("strings")) == (0, 3)
    assert facts.pairing("mozart", 0) is None
    assert pairing_note(facts, "bach", ["piano"]) is None
    note = pairing_note(facts, "bach", ["piano", "strings"])
    assert note is not None and "bach" in note and "strings in 0 of 3" in note and "\n" not in note
    assert NoteFacts.from_dict(facts.to_dict()) == facts


def test_facts_recorded_before_pairings_cannot_tell():
    old = {"notes": [1] * 10, "pitch_low": [60] * 10, "pitch_high": [72] * 10, "length_steps": [50] * 10}
    facts = NoteFacts.from_dict({**old, "time_step_ms": 10})
    assert facts.composer_family_pieces == () and pairing_note(facts, "bach", ["strings"]) is None
    assert pairing_note(None, "bach", ["strings"]) is None
