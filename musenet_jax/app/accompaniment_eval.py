"""`eval --accompany-stats FAMILY`: does the part the model adds listen to the given one? On each piece (of
a split, or a folder of MIDI files with their tempo maps) the model writes FAMILY given the other parts
(or only `--given` ones), and `eval/accompaniment.py` compares its part with the piece's real one and with
a control (issue #28's must-show)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from musenet_jax.app.run import Run
from musenet_jax.data.pieces import load_split_pieces
from musenet_jax.encoding.anticipation import require_anticipation
from musenet_jax.encoding.events import Events
from musenet_jax.encoding.families import FAMILIES
from musenet_jax.encoding.files import midi_files
from musenet_jax.encoding.midi_io import MidiReadError, read_midi, shown
from musenet_jax.errors import UserError
from musenet_jax.eval.accompaniment import beat_times, side_by_side
from musenet_jax.eval.music_stats import opening
from musenet_jax.sample.budget import token_budget
from musenet_jax.sample.conditioning import parse_instruments
from musenet_jax.sample.infill import Given, anticipated_request, new_notes


@dataclasses.dataclass(frozen=True)
class Piece:
    """One piece to accompany: its notes, its composer label and its beats (seconds; empty where the
    source keeps no tempo map, as the datasets do)."""

    events: Events
    composer: str | None
    beats: np.ndarray
    name: str = ""


def split_pieces(run: Run, split: str, max_pieces: int | None) -> list[Piece]:
    """The pieces of a prepared split (no tempo map: the grid is the given part's onsets)."""
    tokenizer = run.tokenizer
    ids = load_split_pieces(run.cfg.data, run.cfg.encoding, split, max_pieces)
    return [Piece(tokenizer.ids_to_events(p), tokenizer.composer_of(p), np.zeros(0)) for p in ids]


def folder_pieces(
    run: Run, folder: str, composer: str | None, max_pieces: int | None, say: Callable[[str], None] = print
) -> list[Piece]:
    """The MIDI files below `folder`, each with its tempo map's beats; an unreadable file is skipped and said
    in one line (and counted in the report by `pieces` against the files found)."""
    tokenizer = run.tokenizer
    tokenizer.vocab.composer_id(composer)  # a misspelt composer: one line listing the valid ones
    pieces = []
    for path in midi_files([folder], say)[:max_pieces]:
        try:
            midi = read_midi(path)
        except MidiReadError as err:
            say(f"skipped {err}")
            continue
        name = path.relative_to(folder).as_posix()
        pieces.append(Piece(tokenizer.midi_to_events(midi), composer, beat_times(midi), name))
    return pieces


def evaluate_accompaniment(
    run: Run,
    *,
    family: str,
    split: str = "test",
    midi_dir: str | None = None,
    composer: str | None = None,
    given: str | None = None,
    max_pieces: int | None = None,
    seed: int = 0,
    show_progress: bool = True,
) -> dict[str, Any]:
    """`eval --accompany-stats FAMILY` on a split's pieces or on the MIDI files below `midi_dir` (see
    `accompaniment_report`)."""
    require_anticipation(run.tokenizer.vocab)
    if max_pieces is not None and max_pieces < 1:
        raise UserError(f"--max-pieces must be at least 1, got {max_pieces}")
    if midi_dir is None:
        source, pieces = {"split": split}, split_pieces(run, split, max_pieces)
    else:
        source, pieces = {"midi_dir": shown(midi_dir)}, folder_pieces(run, midi_dir, composer, max_pieces)
    report = accompaniment_report(
        run, pieces, family=family, given=given, seed=seed, show_progress=show_progress
    )
    return {**source, "step": run.step, **report}


def accompaniment_report(
    run: Run,
    pieces: Sequence[Piece],
    *,
    family: str,
    given: str | None = None,
    seed: int = 0,
    show_progress: bool = False,
) -> dict[str, Any]:
    """On each piece's first `sample.seconds` that has a `family` part and a given one (the other families,
    or those of `given` only, the rest left out), the model writes a `family` part (one candidate); the
    figures of `eval/accompaniment.py` of its part, of the piece's real one and of the control (the model's
    part for another piece's given part: no sampling of its own), averaged over the pieces, and whether the
    model is closer to the real part than the control (`side_by_side`). The grid is the given part's
    onsets and the piece's beats where its source has a tempo map."""
    tokenizer, sc = run.tokenizer, run.cfg.sample
    require_anticipation(tokenizer.vocab)
    names = parse_instruments(family)
    if len(names) != 1:
        raise UserError(f"--accompany-stats takes one family, not {family!r}")
    name = names[0]
    given_names = parse_instruments(given) if given else None
    if given_names is not None and name in given_names:
        raise UserError(f"--given {given} names {name}, the family to add; give the others")
    index, step = FAMILIES.index(name), tokenizer.step_s
    kept = None if given_names is None else [FAMILIES.index(f) for f in given_names]
    sampler = run.sampler()
    ours, real, given_parts, ends_s, beats, scored = [], [], [], [], [], []
    for k, piece in enumerate(tqdm(pieces, unit="piece", desc="accompany", disable=not show_progress)):
        events = opening(piece.events, sc.seconds)
        part = events.family == index
        keep = ~part if kept is None else np.isin(events.family, kept)
        if not part.any() or not keep.any():
            continue
        rest = events.select(keep)
        stop = max(round(float(rest.end_s.max()) / step), 1)
        request_given = Given(tokenizer.decode(tokenizer.events_to_ids(rest, piece.composer)), rest, 0, stop)
        present = [FAMILIES[f] for f in np.unique(np.append(rest.family, index))]
        request = anticipated_request(tokenizer, piece.composer, request_given, present, [name])
        budget = token_budget(stop * step, 1, sc.max_new_tokens) + len(request.forced)
        [candidate] = sampler.sample([request], max_new_tokens=budget, seed=seed + k)
        ours.append(new_notes(tokenizer, candidate.ids, 0))
        real.append(events.select(part))
        given_parts.append(rest)
        ends_s.append(stop * step)
        beats.append(piece.beats)
        scored.append(piece.name)
    if not ours:
        what = "another one" if given_names is None else f"a {', '.join(given_names)} part"
        raise UserError(f"no piece has a {name} part and {what}: nothing to accompany")
    has_beats = any(len(b) for b in beats)
    return {
        "family": name,
        "given": "the other families" if given_names is None else ", ".join(given_names),
        "pieces": len(pieces),
        "scored": len(ours),
        "scored_names": [n for n in scored if n],
        "seconds": sc.seconds,
        "grid": "the given part's onsets and the file's beats (tempo map)"
        if has_beats
        else "the given part's onsets (no tempo map in the dataset)",
        "control_part": "the model's part for the next scored piece's given part (pieces rotated by one)",
        **side_by_side(ours, real, given_parts, ends_s, beats),
    }
