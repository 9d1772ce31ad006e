"""The note facts count which instrument families each composer's training pieces carry, and `generate`'s
note names a requested pairing the data rarely or never shows (`data/note_facts.py`), from a run exported to
a bundle too (the bundled model's too); facts recorded before pairings were counted cannot tell, and the
note stays silent."""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest
from midi_corpus import export_corpus_scores

from musenet_jax.app.run import load_run
from musenet_jax.app.sources import BUNDLED_ENV, bundled_model_dir
from musenet_jax.cli.main import main
from musenet_jax.data.note_facts import (
    NoteFacts,
    load_note_facts,
    note_facts,
    pairing_note,
    split_note_facts,
)
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
    assert "their parts play (sample.part_rest_s)" in note
    silent = pairing_note(facts, "bach", ["strings"], parts_play=False)  # rule 12 switched off
    assert "may stay silent" in silent and "parts play" not in silent
    assert NoteFacts.from_dict(facts.to_dict()) == facts


def test_facts_recorded_before_pairings_cannot_tell():
    old = {"notes": [1] * 10, "pitch_low": [60] * 10, "pitch_high": [72] * 10, "length_steps": [50] * 10}
    facts = NoteFacts.from_dict({**old, "time_step_ms": 10})
    assert facts.composer_family_pieces == () and pairing_note(facts, "bach", ["strings"]) is None
    assert pairing_note(None, "bach", ["strings"]) is None


def test_the_bundled_models_facts_count_pairings_and_the_note_names_a_missing_one(monkeypatch):
    """The bundled model was exported with its training split's pairings (its split is not shipped, the
    counts are): its busiest composer's most played family is common, a family none of its pieces has is
    named."""
    monkeypatch.delenv(BUNDLED_ENV, raising=False)
    facts = load_note_facts(bundled_model_dir())
    assert facts is not None and facts.composer_family_pieces != ()
    composer, counts, total = max(facts.composer_family_pieces, key=lambda entry: entry[2])
    played, absent = FAMILIES[int(np.argmax(counts))], FAMILIES[counts.index(0)]
    assert pairing_note(facts, composer, [played]) is None
    note = pairing_note(facts, composer, [played, absent])
    assert note is not None and f"{absent} in 0 of {total}" in note and f"{played} in" not in note


@pytest.mark.slow
def test_an_exported_bundle_carries_the_pairings_and_generate_names_a_missing_one(
    tiny_bundle, music21_data_dir, tmp_path, capsys
):
    run = load_run(str(tiny_bundle))
    data = dataclasses.replace(run.cfg.data, data_dir=str(music21_data_dir))
    train = split_note_facts(data, run.tokenizer, "train")
    assert run.note_facts.composer_family_pieces == train.composer_family_pieces != ()
    composer, counts, total = max(train.composer_family_pieces, key=lambda entry: entry[2])
    played = FAMILIES[int(np.argmax(counts))]
    absent = FAMILIES[counts.index(0)]
    args = ["generate", "--checkpoint", str(tiny_bundle), "--composer", composer, "--num-samples", "1"]
    args += ["--max-new-tokens", "16", "--out", str(tmp_path / "out")]
    assert main([*args, "--instruments", f"{played},{absent}"]) == 0
    said = capsys.readouterr()
    line = f"rarely or never pairs {composer} with these instruments ({absent} in 0 of {total} pieces)"
    assert (said.out + said.err).count(line) == 1
    assert main([*args[:-1], str(tmp_path / "out2"), "--instruments", played]) == 0
    assert "rarely or never pairs" not in capsys.readouterr().out


def test_export_says_when_the_bundle_cannot_tell_rare_pairings():
    from musenet_jax.app.export import ExportReport

    report = ExportReport("b", {"model.safetensors": 10}, 5, "float32", None, pairings_counted=False)
    assert "so `generate` with it cannot say when a requested pairing is rare" in report.describe()
    assert "pairing" not in dataclasses.replace(report, pairings_counted=True).describe()
