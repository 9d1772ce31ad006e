"""What a fill or an added part must keep: the piece's notes, compared as rows a test can diff (shared by
the co-composer's library and browser tests)."""

from __future__ import annotations

import numpy as np

from musenet_jax.encoding.events import Events

TOLERANCE_S = 0.005  # half a 10 ms time step: onsets read back from tokens land on the grid


def note_rows(events: Events, keep: np.ndarray | None = None) -> set:
    """(family, pitch, onset to 10 ms) of the notes `keep` selects (all by default)."""
    keep = np.ones(len(events), bool) if keep is None else keep
    return set(zip(events.family[keep], events.pitch[keep], np.round(events.start_s[keep], 2)))


def starts_in(events: Events, start_s: float, end_s: float) -> np.ndarray:
    """The notes whose onset lies in [start_s, end_s), as the co-composer's fill reads a span."""
    return (events.start_s >= start_s - TOLERANCE_S) & (events.start_s < end_s - TOLERANCE_S)
