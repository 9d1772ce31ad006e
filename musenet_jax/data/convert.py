"""One input file -> tokenized examples, or the reason it was skipped. Runs in worker processes."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import warnings
from typing import Any

import miditoolkit
import numpy as np

from musenet_jax.data.score_notes import notes_to_midi
from musenet_jax.data.source_files import MAX_PIECES_PER_FILE, SourceFile
from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.encoding.families import FAMILIES, FAMILY_PROGRAM, family_of, family_of_name
from musenet_jax.encoding.midi_io import MidiReadError
from musenet_jax.encoding.tokenizer import NotesRead, Tokenizer

MIN_NOTES = 8  # fewer notes than this is not a piece worth training on ("too short")
PIANO = FAMILIES.index("piano")
SPLIT_PERCENT = (("train", 90), ("validation", 95), ("test", 100))  # cumulative


@dataclasses.dataclass(frozen=True)
class Example:
    source: str
    composer: str
    ids: np.ndarray
    duration_s: float
    n_notes: int
    cut_notes: int = 0  # notes after `encoding.max_seconds`, left out
    split: str | None = None  # the corpus's own split, if it defines one
    extra: tuple[tuple[str, str | int], ...] = ()  # the corpus's own features (MAESTRO's title and year)

    def features(self) -> dict[str, Any]:
        """The example as the builder's TFDS features."""
        return {
            "ids": self.ids.astype(np.int32),
            "composer": self.composer,
            "source": self.source,
            "duration_s": np.float32(self.duration_s),
            "n_notes": np.int32(self.n_notes),
            **dict(self.extra),
        }


@dataclasses.dataclass(frozen=True)
class Skipped:
    source: str
    reason: str  # short code, for the summary
    detail: str  # one line, for the report


def outcome(result: Example | Skipped) -> dict[str, Any]:
    """The small JSON-able record of one conversion result that a build's statistics are computed from."""
    if isinstance(result, Example):
        return {
            "source": result.source,
            "composer": result.composer,
            "tokens": int(len(result.ids)),
            "cut_notes": result.cut_notes,
        }
    return {"source": result.source, "reason": result.reason, "detail": result.detail}


def split_of(source_id: str) -> str:
    """Stable train/validation/test assignment (~90/5/5) from a hash of the source id."""
    bucket = int(hashlib.sha1(source_id.encode()).hexdigest(), 16) % 100
    return next(name for name, limit in SPLIT_PERCENT if bucket < limit)


_TOKENIZERS: dict[EncodingConfig, Tokenizer] = {}


def _tokenizer(cfg: EncodingConfig) -> Tokenizer:
    if cfg not in _TOKENIZERS:
        _TOKENIZERS[cfg] = Tokenizer(cfg)
    return _TOKENIZERS[cfg]


@contextlib.contextmanager
def _music21_repairs_quietly():
    """music21 warns as it repairs scores (overfull measures, ...); each warning is one line between the
    progress bar's updates that the user can do nothing about, so the build keeps them out of the terminal."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"music21(\.|$)")
        yield


def _score_pieces(path: str) -> list:
    """A music21 score, or the first pieces of an opus, as music21 streams."""
    import music21  # here: seconds to import, and only the music21 source needs it

    with _music21_repairs_quietly():
        parsed = music21.converter.parse(path)
    return list(parsed.scores)[:MAX_PIECES_PER_FILE] if isinstance(parsed, music21.stream.Opus) else [parsed]


def score_to_midi(piece):
    """A music21 stream rendered to a miditoolkit object (in memory): music21's own export, or, where that
    fails, the parsed notes as written (`score_notes.py`); parts given their family by name."""
    import music21  # here: seconds to import, and only the music21 source needs it

    with _music21_repairs_quietly():
        try:
            midi_bytes = music21.midi.translate.streamToMidiFile(piece).writestr()
        except Exception:  # music21 raises many types on repeats and notation it cannot re-make
            return programs_from_part_names(notes_to_midi(piece))
    return programs_from_part_names(miditoolkit.MidiFile(file=io.BytesIO(midi_bytes)))


def programs_from_part_names(midi: miditoolkit.MidiFile) -> miditoolkit.MidiFile:
    """A score part exported as piano (music21's program when a part names no instrument it knows: a
    chorale's "Soprano", a quartet's "Violino I") whose name names another family gets that family's
    program, so the data shows the model voices, strings and winds where the score has them."""
    for track in midi.instruments:
        if track.is_drum or family_of(track.program, False) != PIANO:
            continue
        named = family_of_name(track.name or "")
        if named is not None and named != "piano":
            track.program = FAMILY_PROGRAM[named]
    return midi


def _one_line(err: Exception) -> str:
    return (str(err).splitlines()[0] if str(err) else type(err).__name__)[:200]


def convert(source: SourceFile, cfg: EncodingConfig) -> list[Example | Skipped]:
    """Tokenizes every piece of `source`; never raises, so one bad file cannot stop a build."""
    tokenizer = _tokenizer(cfg)
    try:
        pieces = _score_pieces(source.path) if source.kind == "score" else [source.path]
    except Exception as err:  # music21 raises many types on scores it cannot read
        return [Skipped(source.source_id, "unreadable_score", _one_line(err))]
    results: list[Example | Skipped] = []
    for n, piece in enumerate(pieces):
        piece_id = source.source_id if len(pieces) == 1 else f"{source.source_id}#{n}"
        try:
            read = tokenizer.read_notes(score_to_midi(piece) if source.kind == "score" else piece)
        except MidiReadError as err:
            results.append(Skipped(piece_id, err.reason, str(err)))
            continue
        except Exception as err:  # a MIDI that parses but has broken tempo maps or events
            reason = "unreadable_score" if source.kind == "score" else "corrupt"
            results.append(Skipped(piece_id, reason, _one_line(err)))
            continue
        results.append(_example_or_skip(tokenizer, source, piece_id, read))
    return results


def _example_or_skip(
    tokenizer: Tokenizer, source: SourceFile, piece_id: str, read: NotesRead
) -> Example | Skipped:
    """A piece worth training on, or why not; a piece the cut emptied says so rather than `no_notes`."""
    events = read.events
    if len(events) == 0 and read.cut_notes:
        return Skipped(
            piece_id,
            "cut_away",
            f"all {read.cut_notes} notes start after encoding.max_seconds={tokenizer.cfg.max_seconds:g} s",
        )
    if len(events) == 0:
        return Skipped(piece_id, "no_notes", "no notes in the pitch range")
    if len(events) < MIN_NOTES:
        return Skipped(piece_id, "too_short", f"{len(events)} notes (< {MIN_NOTES})")
    ids = tokenizer.events_to_ids(events, source.composer)
    duration = float(events.end_s.max())
    return Example(
        piece_id, source.composer, ids, duration, len(events), read.cut_notes, source.split, source.extra
    )
