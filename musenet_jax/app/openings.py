"""Named openings for the co-composer: the first seconds of well-known scores in music21's embedded corpus.

They need no download (the corpus ships with music21, the project's default data) and go through the same
score -> MIDI -> notes path as `prepare`, so an opening is what the model saw in training. A score is
converted once and kept (`serve` converts them in the background as it starts: the largest take
seconds).
"""

from __future__ import annotations

import dataclasses
import functools

import miditoolkit

from musenet_jax.data.convert import score_to_midi
from musenet_jax.encoding.midi_io import cut_at, events_to_midi, midi_to_events
from musenet_jax.errors import unknown_choice

OPENING_SECONDS = 8.0  # a few bars: enough to set key, tempo and texture


@dataclasses.dataclass(frozen=True)
class Opening:
    corpus_path: str  # music21 corpus path, extension included where a folder holds several formats
    composer: str  # its composer token


OPENINGS: dict[str, Opening] = {
    "Bach: chorale BWV 66.6": Opening("bach/bwv66.6.mxl", "bach"),
    "Bach: Prelude in C major, BWV 846": Opening("bach/bwv846.mxl", "bach"),
    "Mozart: Piano Sonata K. 545": Opening("mozart/k545/movement1_exposition.mxl", "mozart"),
    "Mozart: String Quartet K. 80": Opening("mozart/k80/movement1.mxl", "mozart"),
    "Handel: Lascia ch'io pianga": Opening("handel/rinaldo/lascia_chio_pianga.mxl", "handel"),
    "Schumann: Dichterliebe no. 2": Opening("schumann_robert/dichterliebe_no2.xml", "schumann"),
    "Joplin: Maple Leaf Rag": Opening("joplin/maple_leaf_rag.mxl", "joplin"),
}


def opening_midi(name: str) -> miditoolkit.MidiFile:
    """The first `OPENING_SECONDS` of the opening called `name`, as MIDI."""
    if name not in OPENINGS:
        raise unknown_choice("opening", name, OPENINGS)
    return _converted(OPENINGS[name].corpus_path)


@functools.cache
def _converted(corpus_path: str) -> miditoolkit.MidiFile:
    from music21 import corpus  # here: seconds to import, and only the openings need it

    return events_to_midi(cut_at(midi_to_events(score_to_midi(corpus.parse(corpus_path))), OPENING_SECONDS))


def prepare_openings() -> None:
    """Converts every opening now, so that none waits on music21 later."""
    for name in OPENINGS:
        opening_midi(name)
