"""Input-pipeline settings: where the shards are and how examples are augmented, cropped and batched."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Dataset location, augmentation ranges and loader parallelism."""

    source: str = "music21"  # TFDS builder config: music21 | midi_dir | maestro_v3 | lakh_full
    data_dir: str = "data/tfds"  # TFDS data_dir holding musenet_midi
    midi_dir: str = ""  # manual dir: source=midi_dir's folder, or a standard corpus's archive folder
    shuffle_seed: int = 0
    transpose_semitones: int = 5  # transpose uniformly in [-k, +k]; 0 turns it off
    velocity_scale: float = 0.1  # velocities scaled by a factor in [1 - s, 1 + s]
    time_stretch: float = 0.05  # times scaled by a factor in [1 - s, 1 + s]
    # Share of training rows cropped at the piece's head. Sampling always starts a piece there (time 0, the
    # first notes), and a crop placed uniformly in a piece longer than the context rarely does, so a small
    # model learns how pieces go on better than how they open (docs/quality.md, "Opening crops").
    opening_crop_share: float = 0.0
    worker_count: int = 0  # grain worker processes; 0 = in the main process
    prefetch_buffer: int = 4

    def __post_init__(self) -> None:
        if not 0 <= self.transpose_semitones <= 24:
            raise ValueError(f"data.transpose_semitones must be in [0, 24], got {self.transpose_semitones}")
        if not 0 <= self.opening_crop_share <= 1:
            raise ValueError(f"data.opening_crop_share must be in [0, 1], got {self.opening_crop_share}")
        for key in ("velocity_scale", "time_stretch"):
            if not 0 <= getattr(self, key) < 1:
                raise ValueError(f"data.{key} must be in [0, 1), got {getattr(self, key)}")
        if self.worker_count < 0 or self.prefetch_buffer < 1:
            raise ValueError(
                f"data.worker_count must be >= 0 and data.prefetch_buffer >= 1, got "
                f"{self.worker_count} and {self.prefetch_buffer}"
            )
