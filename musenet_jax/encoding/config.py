"""Encoding settings: everything that changes the vocabulary or the meaning of a token lives here."""

from __future__ import annotations

import dataclasses

DEFAULT_COMPOSERS: tuple[str, ...] = (
    "bach",
    "beethoven",
    "mozart",
    "haydn",
    "handel",
    "schubert",
    "schumann",
    "chopin",
    "brahms",
    "palestrina",
    "monteverdi",
    "josquin",
    "trecento",
    "ciconia",
    "luca",
    "folk",
    "weber",
    "verdi",
    "corelli",
    "joplin",
    "jazz",
    "pop",
)


ANTICIPATION_ORDERS = ("controls_first", "events_first")
SPAN_INFILLS = ("anticipation", "fill_in_middle")


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
    # None keeps every note (pieces are stored whole and training crops windows anywhere in them); a number
    # drops the notes that start later, and `encode` / `prepare` say how many.
    max_seconds: float | None = None
    # Anticipation (encoding/anticipation.py): 0 = off. A number of seconds switches it on: the vocabulary
    # gains control tokens (given notes placed this far ahead of their time) and the `anticipate` flag, and
    # training windows become infilling and accompaniment sequences as well as plain ones.
    anticipation_s: float = 0.0
    # Where an anticipated sequence writes the controls of a time step: before its events (`controls_first`,
    # the bundled model's) or after them (`events_first`: a step's events follow its wait as in a plain
    # sequence, so a control never sits between a wait and the note-offs it times). docs/encoding.md.
    anticipation_order: str = "controls_first"
    # How a span is filled (with anticipation on): given notes after the span anticipated `anticipation_s`
    # ahead of their time (`anticipation`, the bundled model's), or the whole rest of the piece written
    # before the span (`fill_in_middle`: two more tokens; encoding/fill_in_middle.py). Accompaniment is
    # anticipated either way.
    span_infill: str = "anticipation"

    def __post_init__(self) -> None:
        for key in ("time_step_ms", "max_wait_steps", "velocity_bins"):
            if getattr(self, key) < 1:
                raise ValueError(f"encoding.{key} must be a positive integer, got {getattr(self, key)}")
        if not 0 <= self.pitch_min <= self.pitch_max <= 127:
            raise ValueError(
                f"encoding.pitch_min={self.pitch_min} and encoding.pitch_max={self.pitch_max} must "
                "satisfy 0 <= pitch_min <= pitch_max <= 127 (MIDI pitches)"
            )
        if not 0 <= self.anticipation_s <= 60:
            raise ValueError(
                f"encoding.anticipation_s must be seconds in [0, 60] (0 = off, 5 as in the Anticipatory "
                f"Music Transformer), not {self.anticipation_s}"
            )
        if self.anticipation_order not in ANTICIPATION_ORDERS:
            raise ValueError(
                f"encoding.anticipation_order must be one of {', '.join(ANTICIPATION_ORDERS)}, "
                f"not {self.anticipation_order!r}"
            )
        if self.span_infill not in SPAN_INFILLS:
            raise ValueError(
                f"encoding.span_infill must be one of {', '.join(SPAN_INFILLS)}, not {self.span_infill!r}"
            )
        if self.span_infill == "fill_in_middle" and not self.anticipation_s > 0:
            raise ValueError(
                "encoding.span_infill=fill_in_middle writes the given notes as control tokens, which only "
                "anticipation has: set encoding.anticipation_s too (e.g. 5)"
            )
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(
                f"encoding.max_seconds must be seconds > 0 or null (no cut), not {self.max_seconds}"
            )


def describe_cut(max_seconds: float | None) -> str:
    """`whole` or `cut at 240 s`: what `encoding.max_seconds` does to a piece, in words."""
    return "whole" if max_seconds is None else f"cut at {max_seconds:g} s"
