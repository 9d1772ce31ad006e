"""The twelve diatonic (major-scale) pitch-class sets: the one definition of "in key" that the samples'
scale-consistency statistic (`eval/music_stats.py`) and the sampler's key rule (`sample/grammar.py`) share.
The natural minor scales are rotations of these, so twelve sets cover both modes."""

from __future__ import annotations

import numpy as np

MAJOR_SCALE = np.array([0, 2, 4, 5, 7, 9, 11])


def scale_masks() -> np.ndarray:
    """float32 [12 tonics, 12 pitch classes]: 1 where the pitch class is in the tonic's major scale."""
    masks = np.zeros((12, 12), np.float32)
    for tonic in range(12):
        masks[tonic, (MAJOR_SCALE + tonic) % 12] = 1.0
    return masks
