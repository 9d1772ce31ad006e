"""Musical statistics of a piece's notes, and how far apart two sets of pieces are on each.

Per piece (melodic notes for pitch statistics; drums count for timing):
- pitch_class_entropy: entropy (bits) of the pitch-class histogram; 0 for one pitch class, log2(12) max;
- scale_consistency: the largest fraction of notes inside one major scale (any of the 12; the minor
  scales are rotations of these);
- polyphony: mean number of notes sounding over the time steps where at least one sounds;
- note_density: notes per second of the piece;
- empty_time_rate: fraction of the piece's time steps where nothing sounds;
- pitch_range: highest minus lowest pitch, in semitones.
The distance between two sets on one statistic is the 1-D Wasserstein distance of their empirical
distributions divided by the reference set's standard deviation (unitless; 0 = same distribution).
"""

from __future__ import annotations

import numpy as np

from musenet_jax.encoding.events import Events
from musenet_jax.encoding.families import DRUMS
from musenet_jax.encoding.scales import scale_masks

STAT_NAMES: tuple[str, ...] = (
    "pitch_class_entropy",
    "scale_consistency",
    "polyphony",
    "note_density",
    "empty_time_rate",
    "pitch_range",
)


def piece_stats(events: Events, step_s: float) -> dict[str, float]:
    """The statistics of one piece's notes on a grid of `step_s` seconds (NaN where undefined, e.g. no
    notes)."""
    out = dict.fromkeys(STAT_NAMES, float("nan"))
    if len(events) == 0:
        return out
    melodic = events.select(events.family != DRUMS)
    if len(melodic):
        classes = np.bincount(melodic.pitch.astype(np.int64) % 12, minlength=12)
        p = classes[classes > 0] / classes.sum()
        out["pitch_class_entropy"] = float(-(p * np.log2(p)).sum())
        in_scale = scale_masks() @ classes  # notes inside each tonic's scale
        out["scale_consistency"] = float(in_scale.max() / classes.sum())
        out["pitch_range"] = float(melodic.pitch.max() - melodic.pitch.min())
    start = np.rint(events.start_s / step_s).astype(np.int64)
    end = np.maximum(np.rint(events.end_s / step_s).astype(np.int64), start + 1)
    total = int(end.max())
    sounding = np.zeros(total + 1, np.int64)
    np.add.at(sounding, start, 1)
    np.add.at(sounding, end, -1)
    sounding = np.cumsum(sounding)[:total]
    busy = sounding > 0
    out["polyphony"] = float(sounding[busy].mean()) if busy.any() else 0.0
    out["note_density"] = float(len(events) / (total * step_s))
    out["empty_time_rate"] = float(1.0 - busy.mean())
    return out


def opening(events: Events, seconds: float) -> Events:
    """A piece's first `seconds`, notes cut there: the part of a real piece that samples of that length
    are compared with."""
    kept = events.select(events.start_s < seconds)
    return kept.replace(end_s=np.minimum(kept.end_s, seconds))


def stats_table(pieces: list[dict[str, float]]) -> dict[str, np.ndarray]:
    """Per statistic, the finite values over the pieces."""
    values = {name: np.array([p[name] for p in pieces], np.float64) for name in STAT_NAMES}
    return {name: v[np.isfinite(v)] for name, v in values.items()}


def summary(values: dict[str, np.ndarray]) -> dict[str, dict[str, float | None]]:
    """Mean and standard deviation of each statistic (None when no piece defines it)."""
    return {
        name: {
            "mean": float(v.mean()) if len(v) else None,
            "std": float(v.std()) if len(v) else None,
            "n": int(len(v)),
        }
        for name, v in values.items()
    }


def wasserstein_1d(a: np.ndarray, b: np.ndarray) -> float:
    """Earth mover's distance between the empirical distributions of samples `a` and `b`:
    the integral of |F_a - F_b| over the line."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    if not len(a) or not len(b):
        raise ValueError("both sample sets must be non-empty")
    grid = np.concatenate([a, b])
    grid.sort()
    cdf_a = np.searchsorted(a, grid[:-1], side="right") / len(a)
    cdf_b = np.searchsorted(b, grid[:-1], side="right") / len(b)
    return float(np.sum(np.abs(cdf_a - cdf_b) * np.diff(grid)))


def distances(samples: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, float | None]:
    """Per statistic, W1(samples, reference) / std(reference) (the raw W1 when the reference has no
    spread)."""
    out: dict[str, float | None] = {}
    for name in STAT_NAMES:
        s, r = samples[name], reference[name]
        if not len(s) or not len(r):
            out[name] = None
            continue
        w = wasserstein_1d(s, r)
        spread = float(r.std())
        out[name] = w / spread if spread > 0 else w
    return out
