"""Does an added part listen to the given one? Two figures of issue #28's must-show, for a new part (the
model's, the piece's real one, or a control's) against the given part of the same piece:

- `onsets_on_grid`: the share of the new part's onsets that fall on an onset of the given part or on a
  beat of the file's beat grid (its tempo map), within `tolerance_s`;
- `key_consistency`: the share of the new part's pitched notes inside the key of the given part, the
  major scale (or its relative minor, `encoding/scales.py`) that holds most of the given part's notes.

NaN where a figure is undefined: a new part with no notes, or no pitched notes (drums) for the key.

The control of a model that ignores the given part: each piece's given part heard with the part the model
wrote for *another* piece's given part (the pieces rotated by one), so a model whose part listens is
closer to the real part than its control is (`side_by_side`).
"""

from __future__ import annotations

from collections.abc import Sequence

import miditoolkit
import numpy as np

from musenet_jax.encoding.events import Events
from musenet_jax.encoding.families import DRUMS
from musenet_jax.encoding.scales import scale_masks

TOLERANCE_S = 0.03  # about a 64th note at 120 bpm: what a listener hears as together


def beat_times(midi: miditoolkit.MidiFile) -> np.ndarray:
    """Seconds of every beat (quarter note, `ticks_per_beat`) of the file up to its last tick, by its
    tempo map."""
    mapping = np.asarray(midi.get_tick_to_time_mapping(), np.float64)
    return mapping[np.arange(0, len(mapping), midi.ticks_per_beat)]


def onsets_on_grid(new: Events, given: Events, beats: np.ndarray, tolerance_s: float = TOLERANCE_S) -> float:
    """The share of `new`'s onsets within `tolerance_s` of an onset of `given` or of one of `beats`."""
    if not len(new):
        return float("nan")
    grid = np.unique(np.concatenate([given.start_s, beats]))
    at = np.clip(np.searchsorted(grid, new.start_s), 1, max(len(grid) - 1, 1))
    nearest = np.minimum(
        np.abs(new.start_s - grid[at - 1]), np.abs(new.start_s - grid[np.minimum(at, len(grid) - 1)])
    )
    return float(np.mean(nearest <= tolerance_s + 1e-9))


def key_of(given: Events) -> int:
    """The tonic (pitch class) of the major scale holding most of `given`'s pitched notes; -1 if none."""
    pitched = given.select(given.family != DRUMS)
    if not len(pitched):
        return -1
    classes = np.bincount(pitched.pitch.astype(np.int64) % 12, minlength=12)
    return int(np.argmax(scale_masks() @ classes))


def key_consistency(new: Events, given: Events) -> float:
    """The share of `new`'s pitched notes inside the key of `given` (`key_of`)."""
    pitched = new.select(new.family != DRUMS)
    tonic = key_of(given)
    if not len(pitched) or tonic < 0:
        return float("nan")
    return float(scale_masks()[tonic, pitched.pitch.astype(np.int64) % 12].mean())


def accompaniment_stats(new: Events, given: Events, beats: np.ndarray) -> dict[str, float]:
    """{"onsets_on_grid", "key_consistency"} of a new part against the given part."""
    return {
        "onsets_on_grid": onsets_on_grid(new, given, beats),
        "key_consistency": key_consistency(new, given),
    }


def rotated_by_one(parts: Sequence[Events], ends_s: Sequence[float]) -> list[Events]:
    """The control parts: for piece k, the part written for piece k + 1 (the last piece: the first's), its
    notes starting before piece k's given part ends (`ends_s[k]`)."""
    count = len(parts)
    return [parts[(k + 1) % count].select(parts[(k + 1) % count].start_s < ends_s[k]) for k in range(count)]


def side_by_side(
    model: Sequence[Events],
    real: Sequence[Events],
    given: Sequence[Events],
    ends_s: Sequence[float],
    beats: Sequence[np.ndarray] | None = None,
) -> dict:
    """Per piece k, the figures of the model's part, the real part and the control part (`rotated_by_one`)
    against `given[k]` and its `beats[k]` (none: the given onsets alone), averaged over the pieces (None
    where undefined on every piece); per figure whether the model is closer to the real part than the
    control is, and whether it is on every figure defined. The control needs two pieces (None with one).
    Beside them, how busy each part is (`notes_per_second`: its notes that start before the given part
    ends, over that length): a part of a few notes can sit on the grid without listening."""
    grids = [np.zeros(0)] * len(given) if beats is None else beats

    def busy(parts: Sequence[Events]) -> float:  # the notes that start while the given part plays
        return float(np.mean([np.sum(p.start_s < end) / max(end, 1e-9) for p, end in zip(parts, ends_s)]))

    def averaged(parts: Sequence[Events]) -> dict[str, float | None]:
        rows = [accompaniment_stats(part, g, b) for part, g, b in zip(parts, given, grids)]
        values = {key: np.array([row[key] for row in rows]) for key in rows[0]}
        return {key: (float(np.nanmean(v)) if np.isfinite(v).any() else None) for key, v in values.items()}

    ours, truth = averaged(model), averaged(real)
    controls = rotated_by_one(model, ends_s) if len(model) > 1 else None
    control = None if controls is None else averaged(controls)
    closer: dict[str, bool | None] = {}
    for key in ours:
        mine, theirs, other = ours[key], truth[key], None if control is None else control[key]
        closer[key] = None if None in (mine, theirs, other) else abs(mine - theirs) < abs(other - theirs)
    judged = [v for v in closer.values() if v is not None]
    return {
        "model": ours,
        "real": truth,
        "control": control,
        "closer_than_control": closer,
        "closer_on_every_figure": all(judged) if judged else None,
        "notes_per_second": {
            "model": busy(model),
            "real": busy(real),
            "control": None if controls is None else busy(controls),
        },
    }
