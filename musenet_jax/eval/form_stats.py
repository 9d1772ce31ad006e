"""Statistics of form and honesty of a piece's notes, beside the six of `music_stats.py`.

The six statistics measure a piece's texture; pieces with their pitches shuffled, or a random walk on a
scale, pass them (docs/quality.md, "Gates that can fail"). These measure what such pieces lack: themes that
come back, a passage that resembles an earlier one, a key that holds and returns, a pulse, and the
instruments that were asked for. All are per piece (NaN where undefined), computed on the melody line: the
highest melodic (non-drum) pitch at each onset, the line a listener follows.

- recurring_pitch_{4,6,8}: the fraction of the line's n-note pitch patterns that already occurred earlier in
  the piece, ending before this one starts (a pattern that comes back later; 0 for a random walk, high for a
  tune with repeats). Only a pattern of at least `MIN_THEME_PITCHES` distinct pitches counts as coming back:
  a line stuck on one or two pitches repeats itself without a theme (a drone is not form);
- recurring_interval_{4,6,8}: the same for the n-1 intervals between n notes (a theme transposed counts);
- self_similarity: for each window of `WINDOW_NOTES` line notes after the first, the largest cosine similarity
  of its pitch-bigram counts to any earlier window it does not overlap, averaged over the windows (1 = every
  passage repeats an earlier one);
- key_stability: the fraction of `KEY_WINDOW_S`-second windows whose key (the major scale, or its relative
  minor, holding most of the window's notes, as `scale_consistency` defines it) is the most common one;
- key_return: 1 when the last window's key is the first window's, else 0;
- beat_grid_rate: the fraction of gaps between consecutive onsets that are whole multiples, within
  `GRID_TOLERANCE_S`, of half the most common gap (the pulse a score's notes sit on);
- families_present: the fraction of the requested instrument families that play at least one note.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from musenet_jax.encoding.events import Events
from musenet_jax.encoding.families import DRUMS
from musenet_jax.encoding.melody import melody_line
from musenet_jax.encoding.scales import scale_masks

PATTERN_LENGTHS: tuple[int, ...] = (4, 6, 8)
WINDOW_NOTES = 12
KEY_WINDOW_S = 5.0
GRID_TOLERANCE_S = 0.02
MIN_GAP_S = 0.05  # closer onsets are one spread chord or an ornament, not a step of the pulse
MIN_KEY_NOTES = 4  # a window with fewer melodic notes names no key
MIN_THEME_PITCHES = 3  # a recurring pattern with fewer distinct pitches is a drone or a trill, not a theme
# A drone: most of the melody on one pitch and most of its steps repeating the last note. Both thresholds
# lie above every validation piece (top pitch 0.51, repeats 0.50 at most); 10 of 12,603 training openings
# and whole pieces reach both (droning folk tunes); the two-minute samples that collapsed reach 0.75-0.82.
DRONE_TOP_SHARE = 0.6
DRONE_REPEAT_SHARE = 0.5
MIN_DRONE_NOTES = 16  # a shorter line is too short to call a drone

FORM_STAT_NAMES: tuple[str, ...] = (
    *(f"recurring_pitch_{n}" for n in PATTERN_LENGTHS),
    *(f"recurring_interval_{n}" for n in PATTERN_LENGTHS),
    "self_similarity",
    "key_stability",
    "key_return",
    "beat_grid_rate",
    "families_present",
)


def recurring_rate(sequence: np.ndarray, n: int, counted: np.ndarray | None = None) -> float:
    """The fraction of `sequence`'s n-grams that occurred at an earlier position ending before this one
    begins, counting only those whose `counted` flag (one per n-gram, default all) is set; NaN when the
    sequence has fewer than 2n elements (no room for a pattern to come back)."""
    sequence = np.asarray(sequence)
    if len(sequence) < 2 * n:
        return float("nan")
    grams = [tuple(sequence[i : i + n].tolist()) for i in range(len(sequence) - n + 1)]
    counted = np.ones(len(grams), bool) if counted is None else counted
    first_end: dict[tuple, int] = {}  # a pattern's earliest occurrence, by where it ends
    recurring = 0
    for start, gram in enumerate(grams):
        end = first_end.get(gram)
        if end is not None and end <= start:
            recurring += int(counted[start])
        elif end is None:
            first_end[gram] = start + n
    return recurring / len(grams)


def theme_like(line: np.ndarray, n: int) -> np.ndarray:
    """bool [len(line) - n + 1]: whether each run of n line notes has `MIN_THEME_PITCHES` distinct pitches."""
    if len(line) < n:
        return np.zeros(0, bool)
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(line), n)
    ordered = np.sort(windows, axis=1)
    return 1 + (np.diff(ordered, axis=1) != 0).sum(axis=1) >= MIN_THEME_PITCHES


def self_similarity(line: np.ndarray, window: int = WINDOW_NOTES) -> float:
    """Mean over windows (after the first) of the best cosine similarity of their pitch-bigram counts to an
    earlier, non-overlapping window; NaN for a line shorter than two windows."""
    count = len(line) // window
    if count < 2:
        return float("nan")
    vectors = []
    for w in range(count):
        part = line[w * window : (w + 1) * window]
        keys = part[:-1] * 128 + part[1:]
        unique, counts = np.unique(keys, return_counts=True)
        vectors.append(dict(zip(unique.tolist(), counts.astype(np.float64).tolist())))
    best = []
    for w in range(1, count):
        best.append(max(_cosine(vectors[w], vectors[v]) for v in range(w)))
    return float(np.mean(best))


def _cosine(a: dict, b: dict) -> float:
    dot = sum(value * b.get(key, 0.0) for key, value in a.items())
    norm = np.sqrt(sum(v * v for v in a.values()) * sum(v * v for v in b.values()))
    return float(dot / norm) if norm > 0 else 0.0


def window_keys(events: Events, window_s: float = KEY_WINDOW_S) -> np.ndarray:
    """The key (tonic of the major scale holding most notes: 0-11) of each consecutive `window_s`-second
    window with enough melodic notes, in time order."""
    melodic = events.select(events.family != DRUMS)
    if not len(melodic):
        return np.zeros(0, np.int64)
    index = np.floor(melodic.start_s / window_s).astype(np.int64)
    keys = []
    masks = scale_masks()
    for w in np.unique(index):
        pitches = melodic.pitch[index == w].astype(np.int64)
        if len(pitches) < MIN_KEY_NOTES:
            continue
        keys.append(int(np.argmax(masks @ np.bincount(pitches % 12, minlength=12))))
    return np.asarray(keys, np.int64)


def piece_key(events: Events) -> int | None:
    """The key of the whole piece, as `window_keys` names a window's; None without melodic notes."""
    melodic = events.select(events.family != DRUMS)
    if not len(melodic):
        return None
    return int(np.argmax(scale_masks() @ np.bincount(melodic.pitch.astype(np.int64) % 12, minlength=12)))


def beat_grid_rate(events: Events, tolerance_s: float = GRID_TOLERANCE_S) -> float:
    """The fraction of gaps between consecutive distinct onsets that are whole multiples (within
    `tolerance_s`) of half the most common gap: local, so a tempo change or a slowly drifting pulse costs
    one gap, not every onset after it. Gaps under `MIN_GAP_S` are left out. NaN with fewer than three."""
    onsets = np.unique(np.rint(events.start_s / tolerance_s * 4)) * (tolerance_s / 4)
    gaps = np.diff(onsets)
    gaps = gaps[gaps >= MIN_GAP_S]
    if len(gaps) < 2:
        return float("nan")
    binned = np.rint(gaps / tolerance_s).astype(np.int64)
    values, counts = np.unique(binned, return_counts=True)
    modal = values[np.argmax(counts)]
    grid = float(gaps[np.abs(binned - modal) <= 1].mean()) / 2
    units = gaps / grid
    return float(np.mean(np.abs(units - np.rint(units)) * grid <= tolerance_s))


def drone(events: Events) -> tuple[int, float, float] | None:
    """(pitch, its share of the melody line, share of the line's steps that repeat the last note) when the
    line is a drone by `DRONE_TOP_SHARE` and `DRONE_REPEAT_SHARE`, else None."""
    line = melody_line(events)
    if len(line) < MIN_DRONE_NOTES:
        return None
    counts = np.bincount(line)
    top, repeats = counts.max() / len(line), float(np.mean(line[1:] == line[:-1]))
    if top < DRONE_TOP_SHARE or repeats < DRONE_REPEAT_SHARE:
        return None
    return int(counts.argmax()), float(top), repeats


def form_stats(events: Events, requested: Iterable[int] | None = None) -> dict[str, float]:
    """The statistics of one piece (NaN where undefined); `requested`: the family indices asked for (None:
    `families_present` is NaN)."""
    out = dict.fromkeys(FORM_STAT_NAMES, float("nan"))
    line = melody_line(events)
    for n in PATTERN_LENGTHS:
        themes = theme_like(line, n)
        out[f"recurring_pitch_{n}"] = recurring_rate(line, n, themes)
        out[f"recurring_interval_{n}"] = (
            recurring_rate(np.diff(line), n - 1, themes) if len(line) else float("nan")
        )
    out["self_similarity"] = self_similarity(line)
    keys = window_keys(events)
    if len(keys) >= 2:
        out["key_stability"] = float(np.bincount(keys, minlength=12).max() / len(keys))
        out["key_return"] = float(keys[-1] == keys[0])
    if len(events):
        out["beat_grid_rate"] = beat_grid_rate(events)
    if requested is not None:
        wanted = set(int(f) for f in requested)
        if wanted:
            playing = set(np.unique(events.family).tolist())
            out["families_present"] = len(wanted & playing) / len(wanted)
    return out
