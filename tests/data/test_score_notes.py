"""Scores music21 cannot export to MIDI are converted from their parsed notes (`data/score_notes.py`): the
same notes as music21's own export where that works, and corpus tunes it fails on now become pieces."""

from __future__ import annotations

import io
import pathlib

import miditoolkit
import music21
import numpy as np
import pytest

from musenet_jax.data.convert import Example, _score_pieces, convert
from musenet_jax.data.score_notes import notes_to_midi
from musenet_jax.data.source_files import SourceFile
from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.encoding.tokenizer import Tokenizer

CORPUS = pathlib.Path(music21.__file__).parent / "corpus"


def music21_export(path: str) -> miditoolkit.MidiFile:
    midi_file = music21.midi.translate.streamToMidiFile(music21.converter.parse(path))
    return miditoolkit.MidiFile(file=io.BytesIO(midi_file.writestr()))


def test_notes_as_written_match_music21s_export_where_it_works():
    tokenizer = Tokenizer()
    path = str(CORPUS / "bach" / "bwv66.6.mxl")
    exported = tokenizer.read_notes(music21_export(path)).events
    ours = tokenizer.read_notes(notes_to_midi(_score_pieces(path)[0])).events
    assert len(ours) == len(exported) > 100
    np.testing.assert_array_equal(ours.pitch, exported.pitch)
    np.testing.assert_array_equal(ours.family, exported.family)
    np.testing.assert_allclose(ours.start_s, exported.start_s, atol=tokenizer.step_s)
    np.testing.assert_allclose(ours.end_s, exported.end_s, atol=tokenizer.step_s)


@pytest.mark.parametrize(
    "rel,why",
    [
        ("ryansMammoth/BossJig.abc", "repeats music21 calls badly formed"),
        ("ryansMammoth/RoysWifeStrathspey.abc", "a time signature music21 files twice"),
    ],
)
def test_a_tune_music21_cannot_export_becomes_a_piece(rel, why):
    piece = _score_pieces(str(CORPUS / rel))[0]
    with pytest.raises(Exception):  # noqa: B017 - music21's export fails on it (the reason this module exists)
        music21.midi.translate.streamToMidiFile(piece)
    (result,) = convert(SourceFile(str(CORPUS / rel), rel, "folk", "score"), EncodingConfig())
    assert isinstance(result, Example) and result.n_notes >= 32, why
