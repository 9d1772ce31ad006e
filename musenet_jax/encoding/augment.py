"""MuseNet's data augmentation on events: transposition, volume scaling and timing stretch.

Transposition leaves drums alone (their pitches are instruments, not notes). A note pushed out of the
encoding's pitch range is moved back inside by whole octaves, so chords keep their pitch classes instead of
losing notes; only if the range is narrower than an octave is it dropped.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.encoding.events import Events
from musenet_jax.encoding.families import DRUMS


def transpose(events: Events, semitones: int, cfg: EncodingConfig = EncodingConfig()) -> Events:
    """Shifts every non-drum note by `semitones`, folding out-of-range notes back by octaves."""
    melodic = events.family != DRUMS
    pitch = events.pitch.astype(np.int64) + np.where(melodic, semitones, 0)
    while np.any(low := melodic & (pitch < cfg.pitch_min)):
        pitch[low] += 12
    while np.any(high := melodic & (pitch > cfg.pitch_max)):
        pitch[high] -= 12
    keep = (pitch >= cfg.pitch_min) & (pitch <= cfg.pitch_max)
    return events.replace(pitch=pitch.astype(np.int16)).select(keep)


def scale_velocity(events: Events, factor: float) -> Events:
    """Louder or softer by `factor`, staying a valid note-on velocity (1..127)."""
    velocity = np.clip(np.rint(events.velocity * factor), 1, 127).astype(np.int16)
    return events.replace(velocity=velocity)


def stretch_time(events: Events, factor: float) -> Events:
    """Faster (< 1) or slower (> 1) playing: all times scaled before quantization."""
    return events.replace(start_s=events.start_s * factor, end_s=events.end_s * factor)


@dataclasses.dataclass(frozen=True)
class AugmentRanges:
    """How far each augmentation may go; 0 turns one off (the pipeline takes them from `data.*`)."""

    transpose_semitones: int = 0  # uniformly in [-k, +k]
    velocity_scale: float = 0.0  # a factor in [1 - s, 1 + s]
    time_stretch: float = 0.0  # a factor in [1 - s, 1 + s]


def random_augment(
    events: Events, rng: np.random.Generator, ranges: AugmentRanges, enc_cfg: EncodingConfig
) -> Events:
    """One random draw of all three augmentations within `ranges`."""
    k = ranges.transpose_semitones
    semitones = int(rng.integers(-k, k + 1)) if k else 0
    velocity = float(rng.uniform(1 - ranges.velocity_scale, 1 + ranges.velocity_scale))
    stretch = float(rng.uniform(1 - ranges.time_stretch, 1 + ranges.time_stretch))
    return stretch_time(scale_velocity(transpose(events, semitones, enc_cfg), velocity), stretch)


def augment_ids(tokenizer, ids: np.ndarray, rng: np.random.Generator, ranges: AugmentRanges) -> np.ndarray:
    """A token sequence re-encoded after `random_augment`, with the same composer in its prefix."""
    events = random_augment(tokenizer.ids_to_events(ids), rng, ranges, tokenizer.cfg)
    return tokenizer.events_to_ids(events, tokenizer.composer_of(ids))
