"""The 10 MuseNet instrument families and the General MIDI program -> family table (data, one place)."""

from __future__ import annotations

import numpy as np

FAMILIES: tuple[str, ...] = (
    "piano",
    "strings",
    "winds",
    "brass",
    "guitar",
    "bass",
    "organ",
    "plucked",
    "voice",
    "drums",
)
DRUMS = FAMILIES.index("drums")

# General MIDI program ranges (0-based, inclusive) -> family. Drums come from the drum channel, not a program.
_PROGRAM_RANGES: tuple[tuple[int, int, str], ...] = (
    (0, 7, "piano"),  # acoustic / electric pianos, harpsichord, clavinet
    (8, 15, "plucked"),  # chromatic percussion: celesta, glockenspiel, music box, vibraphone, ...
    (16, 23, "organ"),  # organs, accordion, harmonica
    (24, 31, "guitar"),
    (32, 39, "bass"),
    (40, 45, "strings"),  # violin, viola, cello, contrabass, tremolo, pizzicato
    (46, 47, "plucked"),  # orchestral harp, timpani
    (48, 51, "strings"),  # string ensembles, synth strings
    (52, 54, "voice"),  # choir aahs, voice oohs, synth voice
    (55, 55, "strings"),  # orchestra hit
    (56, 63, "brass"),
    (64, 79, "winds"),  # reeds and pipes
    (80, 87, "winds"),  # synth leads play melodic lines
    (88, 103, "strings"),  # synth pads and effects: sustained textures
    (104, 108, "plucked"),  # sitar, banjo, shamisen, koto, kalimba
    (109, 109, "winds"),  # bagpipe
    (110, 110, "strings"),  # fiddle
    (111, 111, "winds"),  # shanai
    (112, 119, "plucked"),  # percussive: tinkle bell, agogo, steel drums, woodblock, ...
    (120, 127, "piano"),  # sound effects: rare; kept rather than dropped
)

PROGRAM_TO_FAMILY: np.ndarray = np.empty(128, dtype=np.int8)
for _lo, _hi, _name in _PROGRAM_RANGES:
    PROGRAM_TO_FAMILY[_lo : _hi + 1] = FAMILIES.index(_name)

# The GM program each family is written back as when decoding.
FAMILY_PROGRAM: dict[str, int] = {
    "piano": 0,
    "strings": 48,
    "winds": 73,
    "brass": 61,
    "guitar": 24,
    "bass": 32,
    "organ": 19,
    "plucked": 46,
    "voice": 52,
    "drums": 0,
}

# Each family's usual written range (MIDI pitches, inclusive), for a family the training data never played:
# grammar rule 6 keeps its note-ons there (a bass part of a model never shown one stays a bass part).
TYPICAL_PITCHES: dict[str, tuple[int, int]] = {
    "piano": (21, 108),
    "strings": (28, 103),  # contrabass E1 to the violin's top
    "winds": (34, 96),
    "brass": (34, 84),
    "guitar": (40, 88),
    "bass": (28, 67),  # E1 to G4
    "organ": (24, 96),
    "plucked": (24, 103),
    "voice": (40, 84),  # bass E2 to soprano C6
    "drums": (35, 81),  # the General MIDI percussion keys
}


def family_of(program: int, is_drum: bool) -> int:
    """Family index of a MIDI track: the drum channel wins over its program number."""
    return DRUMS if is_drum else int(PROGRAM_TO_FAMILY[program])


# Part and instrument names -> family, for scores whose parts name their instrument but carry no program
# (music21 exports such a part, e.g. a chorale's "Soprano", as piano, program 0). Checked in order, each
# the start of a word of the lower-cased name (so "viol" covers violino and violini); the first match wins,
# so "english horn" is a wind before "horn" is brass, and "basso continuo" a keyboard before "basso" a voice.
NAME_FAMILIES: tuple[tuple[str, str], ...] = (
    ("english horn", "winds"),
    ("corno inglese", "winds"),
    ("cor anglais", "winds"),
    ("double bass", "strings"),
    ("contrabass", "strings"),
    ("violone", "strings"),
    ("continuo", "piano"),
    ("piano", "piano"),
    ("harpsichord", "piano"),
    ("cembal", "piano"),
    ("clavi", "piano"),
    ("klavier", "piano"),
    ("keyboard", "piano"),
    ("organ", "organ"),
    ("orgel", "organ"),
    ("viol", "strings"),  # violin, violino, violini, viola, violoncello, violon
    ("cello", "strings"),
    ("fiddle", "strings"),
    ("flut", "winds"),
    ("flaut", "winds"),
    ("piccolo", "winds"),
    ("recorder", "winds"),
    ("obo", "winds"),
    ("clarinet", "winds"),
    ("bassoon", "winds"),
    ("fagott", "winds"),
    ("horn", "brass"),
    ("corn", "brass"),  # corno, corni, cornet, cornetto
    ("trump", "brass"),
    ("tromb", "brass"),  # tromba, trombe, trombone
    ("tuba", "brass"),
    ("harp", "plucked"),
    ("arpa", "plucked"),
    ("lut", "plucked"),
    ("liuto", "plucked"),
    ("theorb", "plucked"),
    ("timpan", "plucked"),
    ("guitar", "guitar"),
    ("sopran", "voice"),
    ("mezzo", "voice"),
    ("alto", "voice"),
    ("altus", "voice"),
    ("tenor", "voice"),
    ("bariton", "voice"),
    ("bass", "voice"),  # after every instrument named "bass...": in a score a plain "Bass" part is sung
    ("cant", "voice"),  # cantus, canto
    ("quint", "voice"),
    ("sext", "voice"),
    ("superius", "voice"),
    ("discant", "voice"),
    ("contratenor", "voice"),
    ("triplum", "voice"),
    ("motetus", "voice"),
    ("voice", "voice"),
    ("voce", "voice"),
    ("choir", "voice"),
    ("chor", "voice"),
    ("coro", "voice"),
)


def family_of_name(name: str) -> str | None:
    """The family a part or instrument name names (`NAME_FAMILIES`), or None."""
    words = "".join(c if c.isalpha() else " " for c in name.lower()).split()
    text = " " + " ".join(words) + " "
    for key, family in NAME_FAMILIES:
        if f" {key}" in text:
            return family
    return None
