"""Statistics of a filled span next to those of the notes it replaced (`generate --infill`).

A fill is judged against the span's original notes, the one reference a request has: the six texture
statistics of `music_stats.py` over the span alone (times from the span's start, note ends cut at its end),
and repetition: the fraction of the span's n-note melody patterns (pitch, and interval for a transposed
return) that also occur in the rest of the piece. A fill that takes up the piece's material scores like a
real span that does; a random or unrelated fill scores near 0.
"""

from __future__ import annotations

import numpy as np

from musenet_jax.encoding.events import Events
from musenet_jax.encoding.melody import melody_line
from musenet_jax.eval.music_stats import STAT_NAMES, piece_stats

SHARED_LENGTHS: tuple[int, ...] = (4, 6)
SPAN_STAT_NAMES: tuple[str, ...] = (
    *STAT_NAMES,
    *(f"shared_pitch_{n}" for n in SHARED_LENGTHS),
    *(f"shared_interval_{n}" for n in SHARED_LENGTHS),
)


def shared_rate(span: np.ndarray, rest: np.ndarray, n: int) -> float:
    """The fraction of `span`'s n-grams that occur anywhere in `rest`; NaN when the span has fewer than n
    elements."""
    if len(span) < n:
        return float("nan")
    known = {tuple(rest[i : i + n].tolist()) for i in range(len(rest) - n + 1)}
    grams = [tuple(span[i : i + n].tolist()) for i in range(len(span) - n + 1)]
    return sum(gram in known for gram in grams) / len(grams)


def in_span(events: Events, start_step: int, stop_step: int, step_s: float) -> Events:
    """The notes whose onset step is in [start_step, stop_step) (as `sample/infill.py` picks the notes to
    refill), moved to start at 0 and cut at the span's end."""
    onset = np.rint(events.start_s / step_s)
    kept = events.select((onset >= start_step) & (onset < stop_step))
    start_s, end_s = start_step * step_s, stop_step * step_s
    return kept.replace(start_s=kept.start_s - start_s, end_s=np.minimum(kept.end_s, end_s) - start_s)


def span_stats(span: Events, rest: Events, step_s: float) -> dict[str, float]:
    """The statistics of a span's notes (`in_span`) against the rest of the piece (NaN where undefined)."""
    out = {name: float(value) for name, value in piece_stats(span, step_s).items()}
    span_line, rest_line = melody_line(span), melody_line(rest)
    for n in SHARED_LENGTHS:
        out[f"shared_pitch_{n}"] = shared_rate(span_line, rest_line, n)
        out[f"shared_interval_{n}"] = shared_rate(np.diff(span_line), np.diff(rest_line), n - 1)
    return out


def span_summary(
    original: dict[str, float], fills: list[dict[str, float]]
) -> dict[str, dict[str, float | None]]:
    """Per statistic: the original span's value, the fills' mean, and their mean absolute difference from
    the original (None where undefined)."""

    def finite(values: list[float]) -> np.ndarray:
        array = np.asarray(values, np.float64)
        return array[np.isfinite(array)]

    out: dict[str, dict[str, float | None]] = {}
    for name in SPAN_STAT_NAMES:
        values = finite([fill[name] for fill in fills])
        real = original[name]
        out[name] = {
            "original": None if not np.isfinite(real) else real,
            "fills_mean": float(values.mean()) if len(values) else None,
            "mean_abs_difference": (
                float(np.abs(values - real).mean()) if len(values) and np.isfinite(real) else None
            ),
        }
    return out
