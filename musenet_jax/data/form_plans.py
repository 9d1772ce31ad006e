"""Where a piece brings a passage back: the repeats of its melody line, as a plan a sampler can follow.

A reel plays each strain twice, a chorale sings its first two lines again to new words; a model drawing one
token at a time rarely brings a passage back by itself (docs/quality.md, "Form plans"). The training split
says how each composer's pieces repeat: a piece's plan is its length and the list of its repeats, each
`(start, lag, end)` in time steps: from `start` to `end` the melody line plays what it played `lag` steps
earlier. Plans of the composer's training pieces, pieces without repeats included, are kept with the note
facts (`NoteFacts.composer_plans`); grammar rule 13 (`sample/form.py`) draws them per candidate, one after
another until they cover its length, so its form is one the data has, as often as the data has it.

A repeat is found as a run of at least `MIN_RUN_NOTES` consecutive line notes, of at least
`MIN_RUN_PITCHES` distinct pitches (a drone repeats at every lag), each sounding the pitch the line had
`lag` earlier (within `ONSET_TOLERANCE_S`, for performed music). Lags are tried where same-pitch onsets
pair most often; runs are kept longest first, not overlapping.
"""

from __future__ import annotations

import numpy as np

from musenet_jax.encoding.events import Events
from musenet_jax.encoding.melody import melody_onsets

Repeat = tuple[int, int, int]  # (start, lag, end) in time steps
# (the piece's length in steps, at most PLAN_SECONDS; its repeats by start)
Plan = tuple[int, tuple[Repeat, ...]]

MIN_RUN_NOTES = 8  # a shorter run is a figure, not a passage that comes back
MIN_RUN_PITCHES = 3
MIN_LAG_S = 2.0  # a passage repeating sooner is a figure played twice (a trill, an Alberti bass)
MAX_LAG_S = 60.0
PLAN_SECONDS = 300.0  # the plan covers a piece's first five minutes (MuseNet's pieces run four)
ONSET_TOLERANCE_S = 0.03
LAGS_TRIED = 6  # the most frequent same-pitch onset distances, per piece
MAX_REPEATS = 8  # repeats kept per plan
PLANS_PER_COMPOSER = 64  # plans kept per composer, drawn at random from its pieces


def piece_plan(events: Events, step_s: float) -> Plan:
    """The piece's length and the repeats of its melody line (the longest kept first), ordered by start."""
    seconds = min(float(events.end_s.max()) if len(events) else 0.0, PLAN_SECONDS)
    return max(1, round(seconds / step_s)), _repeats(events, step_s)


def _repeats(events: Events, step_s: float) -> tuple[Repeat, ...]:
    onsets_s, pitches = melody_onsets(events)
    keep = onsets_s < PLAN_SECONDS
    onsets = np.rint(onsets_s[keep] / step_s).astype(np.int64)
    pitches = pitches[keep]
    if len(onsets) < 2 * MIN_RUN_NOTES:
        return ()
    tolerance = max(1, round(ONSET_TOLERANCE_S / step_s))
    runs = []
    for lag in _frequent_lags(onsets, pitches, step_s, tolerance):
        runs += _runs_at(onsets, pitches, lag, tolerance)
    chosen: list[Repeat] = []
    for start, lag, end, _ in sorted(runs, key=lambda run: -run[3]):
        if len(chosen) < MAX_REPEATS and all(end <= s or start >= e for s, _, e in chosen):
            chosen.append((start, lag, end))
    return tuple(sorted(chosen))


def _frequent_lags(onsets: np.ndarray, pitches: np.ndarray, step_s: float, tolerance: int) -> list[int]:
    """The `LAGS_TRIED` distances (steps) that separate onsets of equal pitch most often."""
    low, high = round(MIN_LAG_S / step_s), round(MAX_LAG_S / step_s)
    distances = []
    for pitch in np.unique(pitches):
        times = onsets[pitches == pitch]
        gaps = (times[None, :] - times[:, None]).ravel()
        distances.append(gaps[(gaps >= low) & (gaps <= high)])
    gaps = np.concatenate(distances)
    if not len(gaps):
        return []
    binned = (gaps + tolerance) // (2 * tolerance + 1)  # onsets a tolerance apart share a bin
    values, counts = np.unique(binned, return_counts=True)
    lags = []
    for value in values[np.argsort(-counts, kind="stable")[:LAGS_TRIED]]:
        exact, times = np.unique(gaps[binned == value], return_counts=True)
        lags.append(int(exact[np.argmax(times)]))  # a score's repeat is exact: its most common gap
    return lags


def _runs_at(
    onsets: np.ndarray, pitches: np.ndarray, lag: int, tolerance: int
) -> list[tuple[int, int, int, int]]:
    """(start, lag, end, notes) of each run of line notes that sound the line's pitch `lag` earlier; the
    run ends where the note after its last one begins."""
    keys = pitches * (1 << 40) + onsets  # sorted by pitch, then time
    order = np.sort(keys)
    wanted = pitches * (1 << 40) + onsets - lag
    found = np.searchsorted(order, wanted + tolerance, side="right") - np.searchsorted(
        order, wanted - tolerance, side="left"
    )
    matched = found > 0
    edges = np.flatnonzero(np.diff(np.r_[0, matched.astype(np.int8), 0]))
    runs = []
    for first, stop in zip(edges[::2], edges[1::2]):
        if stop - first >= MIN_RUN_NOTES and len(np.unique(pitches[first:stop])) >= MIN_RUN_PITCHES:
            end = int(onsets[stop]) if stop < len(onsets) else int(onsets[stop - 1]) + 1
            runs.append((int(onsets[first]), lag, end, int(stop - first)))
    return runs


def composer_plans(plans_by_composer: dict[str, list[Plan]], seed: int = 0) -> dict[str, tuple[Plan, ...]]:
    """At most `PLANS_PER_COMPOSER` plans per composer, drawn without replacement (all where fewer)."""
    rng = np.random.default_rng(seed)
    kept = {}
    for name in sorted(plans_by_composer):
        plans = plans_by_composer[name]
        if len(plans) > PLANS_PER_COMPOSER:
            plans = [plans[i] for i in sorted(rng.choice(len(plans), PLANS_PER_COMPOSER, replace=False))]
        kept[name] = tuple(plans)
    return kept
