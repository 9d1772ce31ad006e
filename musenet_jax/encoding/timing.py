"""Absolute time of every token, for the model's timing and structure embeddings.

A fill-in-the-middle sequence (`encoding/fill_in_middle.py`) writes the rest of the piece before the span:
its waits run from the span's start on, and `fim:middle` takes the clock back to where `fim:suffix` left it.
"""

from __future__ import annotations

import numpy as np

from musenet_jax.encoding.vocab import KIND_FIM_MIDDLE, KIND_FIM_SUFFIX, Vocabulary


def in_suffix(ids: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """bool [..., T]: `fim:suffix` and the tokens after it, up to `fim:middle` (the given rest of the piece);
    all False in any other sequence."""
    kinds = vocab.token_kinds[np.asarray(ids)]
    return np.cumsum(kinds == KIND_FIM_SUFFIX, axis=-1) > np.cumsum(kinds == KIND_FIM_MIDDLE, axis=-1)


def token_times(ids: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """Time step at which each token happens: the waits before it (notes sounding together share it),
    leaving out a fill-in-the-middle suffix's waits once it is over."""
    ids = np.asarray(ids)
    waits = vocab.wait_steps[ids].astype(np.int64)
    clock = np.cumsum(waits, axis=-1) - waits
    if not vocab.fills_in_middle:
        return clock.astype(np.int32)
    suffix = in_suffix(ids, vocab)
    suffix_waits = np.cumsum(np.where(suffix, waits, 0), axis=-1)
    return np.where(suffix, clock, clock - suffix_waits).astype(np.int32)


def duration_steps(ids: np.ndarray, vocab: Vocabulary) -> int:
    """Length of a piece in time steps: where its last wait ends (a fill-in-the-middle sequence's stream's;
    its given part's waits count from the span's start, which only its builder knows)."""
    ids = np.asarray(ids)
    ends = (token_times(ids, vocab) + vocab.wait_steps[ids])[~in_suffix(ids, vocab)]
    return int(ends.max()) if len(ends) else 0
