"""Absolute time of every token, for the model's timing and structure embeddings."""

from __future__ import annotations

import numpy as np

from musenet_jax.encoding.vocab import Vocabulary


def token_times(ids: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """Time step at which each token happens: the waits before it (notes sounding together share it)."""
    waits = vocab.wait_steps[np.asarray(ids)]
    return (np.cumsum(waits, axis=-1) - waits).astype(np.int32)


def duration_steps(ids: np.ndarray, vocab: Vocabulary) -> int:
    """Length of a piece in time steps: all its waits."""
    return int(vocab.wait_steps[np.asarray(ids)].sum())
