"""Notes as columns of numpy arrays: the format between MIDI objects and tokens, and what augmentation
edits."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Events:
    """One row per note, times in seconds (unquantized, so time stretch happens before quantization).

    The token stream's note-on / note-off / wait order is derived from these rows at tokenization;
    `end_s` of drum notes is ignored there (drums have note-on tokens only).
    """

    start_s: np.ndarray  # float64 [N]
    end_s: np.ndarray  # float64 [N]
    family: np.ndarray  # int8 [N], index into families.FAMILIES
    pitch: np.ndarray  # int16 [N], MIDI pitch
    velocity: np.ndarray  # int16 [N], MIDI velocity 1..127

    def __len__(self) -> int:
        return int(self.start_s.shape[0])

    @staticmethod
    def empty() -> Events:
        return Events.from_columns([], [], [], [], [])

    @staticmethod
    def from_columns(start_s, end_s, family, pitch, velocity) -> Events:
        return Events(
            start_s=np.asarray(start_s, dtype=np.float64),
            end_s=np.asarray(end_s, dtype=np.float64),
            family=np.asarray(family, dtype=np.int8),
            pitch=np.asarray(pitch, dtype=np.int16),
            velocity=np.asarray(velocity, dtype=np.int16),
        )

    def select(self, keep: np.ndarray) -> Events:
        """Rows where `keep` (bool mask or index array) selects."""
        return Events(*(getattr(self, f.name)[keep] for f in dataclasses.fields(self)))

    def replace(self, **columns: np.ndarray) -> Events:
        return dataclasses.replace(self, **columns)

    def sorted(self) -> Events:
        """Canonical order: by onset, then family, then pitch; makes equal note sets compare equal."""
        return self.select(np.lexsort((self.pitch, self.family, self.start_s)))
