"""Real MIDI that ships with installed packages, for tests: music21's test files, miditoolkit's
example, and a few music21 corpus scores exported to MIDI (cached per test session)."""

from __future__ import annotations

import pathlib

import miditoolkit
import music21

CORPUS_SCORES = ("bach/bwv66.6", "mozart/k80/movement1", "beethoven/opus18no1/movement1", "monteverdi/madrigal.3.1")


def packaged_midi_files() -> list[pathlib.Path]:
    music21_root = pathlib.Path(music21.__file__).parent
    files = sorted(music21_root.glob("midi/testPrimitive/*.mid"))
    files += sorted(pathlib.Path(miditoolkit.__file__).parent.rglob("*.mid"))
    return files


def export_corpus_scores(out_dir: pathlib.Path, names: tuple[str, ...] = CORPUS_SCORES) -> list[pathlib.Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = out_dir / (name.replace("/", "_") + ".mid")
        if not path.exists():
            music21.corpus.parse(name).write("midi", fp=str(path))
        paths.append(path)
    return paths
