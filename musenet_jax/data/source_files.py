"""Which files make up a corpus and what composer label each gets.

`music21`: the scores bundled with the music21 package, labelled by their corpus folder (the table
below; other composers, e.g. Schoenberg or C. P. E. Bach, are `unknown`). Left out: analysis-only files
(roman-numeral `.rntxt`) and the folders in `MUSIC21_EXCLUDED` (notation and layout test files, theory
exercises: not repertoire). A file holding several pieces (an ABC opus) contributes up to
`MAX_PIECES_PER_FILE` of them. `midi_dir`: every MIDI file below a folder, the
composer being the first-level sub-folder's name (as `label_name` writes it), else `unknown`: any name,
since `prepare` gives the dataset's vocabulary a token for every label it finds (`data/labels.py`).
"""

from __future__ import annotations

import dataclasses
import pathlib

from musenet_jax.encoding.files import MIDI_SUFFIXES
from musenet_jax.encoding.midi_io import shown
from musenet_jax.encoding.vocab import UNKNOWN_COMPOSER, label_name

MAX_PIECES_PER_FILE = 25
SCORE_SUFFIXES = frozenset({".krn", ".abc", ".mxl", ".xml", ".musicxml"})

# music21 corpus folder -> composer label (unlisted folders are `unknown`).
MUSIC21_COMPOSERS: dict[str, str] = {
    "bach": "bach",
    "beethoven": "beethoven",
    "mozart": "mozart",
    "haydn": "haydn",
    "handel": "handel",
    "schubert": "schubert",
    "schumann_robert": "schumann",
    "schumann_clara": "schumann",
    "chopin": "chopin",
    "palestrina": "palestrina",
    "monteverdi": "monteverdi",
    "josquin": "josquin",
    "trecento": "trecento",
    "ciconia": "ciconia",
    "luca": "luca",
    "weber": "weber",
    "verdi": "verdi",
    "corelli": "corelli",
    "joplin": "joplin",
    "ryansMammoth": "folk",
    "oneills1850": "folk",
    "essenFolksong": "folk",
    "airdsAirs": "folk",
    "miscFolk": "folk",
    "nottingham-dataset": "folk",
}

MUSIC21_EXCLUDED = frozenset({"demos", "theoryExercises"})


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """One input file: where it is, its stable id (relative path), its label and, for a corpus that defines
    them, its split (else one is drawn from a hash of the id) and features of its own (MAESTRO's title)."""

    path: str
    source_id: str
    composer: str
    kind: str  # "midi" or "score"
    split: str | None = None
    extra: tuple[tuple[str, str | int], ...] = ()  # (feature, value) pairs


def music21_sources() -> list[SourceFile]:
    import music21  # here: seconds to import, and only the music21 source needs it
    from music21 import corpus

    root = pathlib.Path(music21.__file__).parent / "corpus"
    found = []
    for path in sorted(map(pathlib.Path, corpus.getCorePaths())):
        if path.suffix.lower() not in SCORE_SUFFIXES:
            continue
        rel = path.relative_to(root)
        if rel.parts[0] in MUSIC21_EXCLUDED:
            continue
        composer = MUSIC21_COMPOSERS.get(rel.parts[0], "unknown")
        found.append(SourceFile(str(path), rel.as_posix(), composer, "score"))
    return found


def midi_dir_sources(folder: str | pathlib.Path) -> list[SourceFile]:
    """Everything with a MIDI suffix below `folder` but folders: bad files, broken links and unreadable ones
    are skipped later with their reason, not left out unsaid."""
    root = pathlib.Path(folder)
    found = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and not p.is_dir()):
        rel = path.relative_to(root)
        composer = label_name(shown(rel.parts[0])) if len(rel.parts) > 1 else UNKNOWN_COMPOSER
        found.append(SourceFile(str(path), shown(rel.as_posix()), composer, "midi"))
    return found
