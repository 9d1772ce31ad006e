"""Score parts reach their families by name (`encoding/families.py` NAME_FAMILIES, `data/convert.py`): a
Bach chorale's Soprano..Bass were encoded as piano; now they are voices, and a part that names a real
instrument or a program other than piano keeps what it had."""

from __future__ import annotations

import pathlib

import miditoolkit
import music21
import numpy as np

from musenet_jax.data.convert import Example, convert, programs_from_part_names
from musenet_jax.data.source_files import SourceFile
from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.encoding.families import FAMILIES, family_of_name
from musenet_jax.encoding.tokenizer import Tokenizer

CORPUS = pathlib.Path(music21.__file__).parent / "corpus"


def test_names_of_voices_strings_winds_and_brass():
    named = {
        "voice": ("Soprano", "Alto", "Tenor", "Bass", "Cantus", "Contratenor", "Quinto", "Basso"),
        "strings": ("Violino I", "Violin", "Viola", "Violoncello", "Cello", "Contrabass", "Double Bass"),
        "winds": ("Flute", "Flauto traverso", "Oboe", "Clarinet in A", "Fagotto", "Bassoon", "Corno inglese"),
        "brass": ("Horn in F", "Corno", "Trumpet", "Trombone"),
        "piano": ("Piano", "Basso continuo", "Harpsichord"),
    }
    for family, names in named.items():
        assert [family_of_name(n) for n in names] == [family] * len(names), family
    assert family_of_name("Part 1") is None and family_of_name("") is None


def test_a_chorale_is_encoded_as_voices_not_piano():
    source = SourceFile(str(CORPUS / "bach" / "bwv66.6.mxl"), "bach/bwv66.6.mxl", "bach", "score")
    (example,) = convert(source, EncodingConfig())
    assert isinstance(example, Example)
    events = Tokenizer().ids_to_events(example.ids)
    assert set(np.unique(events.family).tolist()) == {FAMILIES.index("voice")}


def test_only_piano_programs_are_renamed():
    midi = miditoolkit.MidiFile()
    midi.instruments = [
        miditoolkit.Instrument(program=0, name="Violino I"),
        miditoolkit.Instrument(program=73, name="Soprano"),  # a flute part named for its voice: kept
        miditoolkit.Instrument(program=0, name="Right hand"),
        miditoolkit.Instrument(program=0, is_drum=True, name="Bass drum"),
    ]
    assert [t.program for t in programs_from_part_names(midi).instruments] == [48, 73, 0, 0]
