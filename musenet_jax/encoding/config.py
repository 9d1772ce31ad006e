"""Encoding settings: everything that changes the vocabulary or the meaning of a token lives here."""

from __future__ import annotations

import dataclasses

DEFAULT_COMPOSERS: tuple[str, ...] = (
    "bach", "beethoven", "mozart", "haydn", "handel", "schubert", "schumann", "chopin", "brahms",
    "palestrina", "monteverdi", "josquin", "trecento", "ciconia", "luca", "folk",
    "weber", "verdi", "corelli", "joplin", "jazz", "pop",
)


@dataclasses.dataclass(frozen=True)
class EncodingConfig:
    """MuseNet-style event encoding: time grid, wait tokens, velocity bins, pitch range, composers.

    `unknown` is always appended to `composers` by the vocabulary, so it is never listed here.
    """

    time_step_ms: int = 10  # one wait step; onsets are quantized to this grid
    max_wait_steps: int = 128  # wait:1..W; a longer gap is several waits
    velocity_bins: int = 4  # non-zero velocity bins; velocity 0 is the note-off
    pitch_min: int = 0
    pitch_max: int = 127
    composers: tuple[str, ...] = DEFAULT_COMPOSERS
    max_seconds: float = 240.0  # pieces are cut here (MuseNet: up to 4 minutes)
