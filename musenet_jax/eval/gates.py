"""The gate: every statistic (the six of texture and those of form and honesty) of a set of pieces against a
reference split's, pooled and per composer, and which statistics a set fails.

A set fails a statistic when its distance (1-D Wasserstein distance over the reference's standard
deviation, as `music_stats.distances`) is above `GATE_STD`, pooled or for one composer with enough pieces on
both sides (`VERDICT_REFERENCE`, `VERDICT_PIECES`): pooling composers hides errors in opposite directions
(one composer's notes too dense, another's too sparse), and folk tunes' repeats hide Palestrina's lack of
them.
`eval --controls` puts pieces no model made
through the same gate (`controls.py`), next to real held-out pieces (the noise floor), so a reader sees that
the gate can fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from musenet_jax.encoding.events import Events
from musenet_jax.eval.controls import CONTROLS
from musenet_jax.eval.form_stats import FORM_STAT_NAMES, form_stats
from musenet_jax.eval.music_stats import STAT_NAMES, piece_stats, wasserstein_1d

GATE_STATS: tuple[str, ...] = (*STAT_NAMES, *FORM_STAT_NAMES)
GATE_STD = 1.0  # a set passes a statistic within this many reference standard deviations
MIN_REFERENCE = 2  # a composer's reference needs this many pieces to have a spread
VERDICT_REFERENCE = 10  # a composer's distances count towards the verdict from this many reference pieces
VERDICT_PIECES = 4  # ... and this many pieces of the set


def gate_piece_stats(events: Events, step_s: float, requested: Sequence[int] | None) -> dict[str, float]:
    """All gate statistics of one piece."""
    return {**piece_stats(events, step_s), **form_stats(events, requested)}


def gate_table(pieces: Sequence[dict[str, float]]) -> dict[str, np.ndarray]:
    """Per statistic, the finite values over the pieces."""
    values = {name: np.array([p[name] for p in pieces], np.float64) for name in GATE_STATS}
    return {name: v[np.isfinite(v)] for name, v in values.items()}


def gate_summary(table: dict[str, np.ndarray]) -> dict[str, dict[str, float | None]]:
    """Mean, standard deviation and count of each statistic (None when no piece defines it)."""
    return {
        name: {
            "mean": float(v.mean()) if len(v) else None,
            "std": float(v.std()) if len(v) else None,
            "n": int(len(v)),
        }
        for name, v in table.items()
    }


def gate_distances(
    pieces: dict[str, np.ndarray], reference: dict[str, np.ndarray]
) -> dict[str, float | None]:
    """Per statistic, W1(pieces, reference) / std(reference) (the raw W1 when the reference has no spread;
    None when either side has no value)."""
    out: dict[str, float | None] = {}
    for name in GATE_STATS:
        s, r = pieces[name], reference[name]
        if not len(s) or not len(r):
            out[name] = None
            continue
        spread = float(r.std())
        w = wasserstein_1d(s, r)
        out[name] = w / spread if spread > 0 else w
    return out


def failed(distance: dict[str, float | None], limit: float = GATE_STD) -> list[str]:
    """The statistics a set is further than `limit` reference standard deviations from."""
    return [name for name, d in distance.items() if d is not None and d > limit]


def by_composer(
    stats: Sequence[dict[str, float]],
    composers: Sequence[str],
    reference: Sequence[dict[str, float]],
    reference_composers: Sequence[str],
) -> dict[str, dict[str, Any]]:
    """Distances of each composer's pieces from that composer's reference pieces (composers with at least
    one piece and `MIN_REFERENCE` reference pieces)."""
    out = {}
    for name in sorted(set(composers)):
        mine = [s for s, c in zip(stats, composers) if c == name]
        theirs = [s for s, c in zip(reference, reference_composers) if c == name]
        if len(theirs) < MIN_REFERENCE:
            continue
        distance = gate_distances(gate_table(mine), gate_table(theirs))
        out[name] = {"pieces": len(mine), "reference_pieces": len(theirs), "distance": distance}
    return out


def gate_report(
    stats: Sequence[dict[str, float]],
    composers: Sequence[str],
    reference: Sequence[dict[str, float]],
    reference_composers: Sequence[str],
) -> dict[str, Any]:
    """One set through the gate: its statistics, pooled distances, per composer, and the statistics it
    fails ("stat" pooled, "composer:stat" for one composer)."""
    table = gate_table(stats)
    distance = gate_distances(table, gate_table(reference))
    composers_report = by_composer(stats, composers, reference, reference_composers)
    fails = failed(distance)
    for name, entry in composers_report.items():
        if entry["reference_pieces"] >= VERDICT_REFERENCE and entry["pieces"] >= VERDICT_PIECES:
            fails += [f"{name}:{stat}" for stat in failed(entry["distance"])]
    return {
        "pieces": len(stats),
        "stats": gate_summary(table),
        "distance": distance,
        "fails": fails,
        "by_composer": composers_report,
    }


def control_reports(
    heldout: Sequence[Events],
    heldout_families: Sequence[Sequence[int]],
    heldout_composers: Sequence[str],
    reference: Sequence[dict[str, float]],
    reference_composers: Sequence[str],
    step_s: float,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """The real held-out pieces (the noise floor: what a perfect model's samples would score) and each
    control made from them, through the gate against the reference's statistics."""
    rng = np.random.default_rng(seed)
    sets = {"real_heldout": list(heldout)}
    for name, make in CONTROLS.items():
        sets[name] = [make(events, rng) for events in heldout]
    out = {}
    for name, pieces in sets.items():
        stats = [gate_piece_stats(e, step_s, f) for e, f in zip(pieces, heldout_families)]
        out[name] = gate_report(stats, heldout_composers, reference, reference_composers)
    return out
