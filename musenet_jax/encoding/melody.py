"""The melody line of a piece: the highest melodic (non-drum) pitch at each distinct onset, the line a
listener follows. Shared by the form statistics (`eval/form_stats.py`), the near-duplicate search that
keeps a tune's versions in one split (`data/split_groups.py`) and the form plans (`data/form_plans.py`)."""

from __future__ import annotations

import numpy as np

from musenet_jax.encoding.events import Events
from musenet_jax.encoding.families import DRUMS


def melody_onsets(events: Events) -> tuple[np.ndarray, np.ndarray]:
    """(onset seconds, pitch) of the highest melodic pitch at each distinct onset (to the millisecond), in
    time order."""
    melodic = events.select(events.family != DRUMS)
    if not len(melodic):
        return np.zeros(0, np.float64), np.zeros(0, np.int64)
    onsets = np.rint(melodic.start_s * 1000).astype(np.int64)  # milliseconds: chords share an onset
    order = np.lexsort((-melodic.pitch.astype(np.int64), onsets))
    onsets, pitches = onsets[order], melodic.pitch.astype(np.int64)[order]
    first = np.r_[True, onsets[1:] != onsets[:-1]]
    return onsets[first] / 1000.0, pitches[first]


def melody_line(events: Events) -> np.ndarray:
    """The highest melodic pitch at each distinct onset (to the millisecond), in time order."""
    return melody_onsets(events)[1]
