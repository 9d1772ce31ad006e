"""Bits per note and bits per second of music: likelihoods that compare across tokenizations.

Bits per token depends on how many tokens an encoding spends on a piece; the total negative
log-likelihood of the same music does not. So the total bits of the split's windows (every token after a
piece's first, each scored once) are divided by the notes the pieces hold (their note-on tokens) and by
the seconds of music they span (all their waits), as the Anticipatory Music Transformer reports loss per
second. The same figures per composer (the label a piece's first token names) show which styles the
model knows best.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from musenet_jax.encoding.timing import duration_steps
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.encoding.vocab import KIND_NOTE_ON, UNKNOWN_COMPOSER


def music_rates(
    tokenizer: Tokenizer,
    pieces: Sequence[np.ndarray],
    nats_by_piece: np.ndarray,
    tokens_by_piece: np.ndarray,
) -> dict[str, Any]:
    """{"bits_per_note", "bits_per_second", "notes", "seconds", "by_composer": {name: {"pieces",
    "tokens", "notes", "seconds", "bits_per_token", "bits_per_note", "bits_per_second"}}}; a rate
    whose denominator is zero is None."""
    vocab = tokenizer.vocab
    notes = np.array([int((vocab.token_kinds[np.asarray(p)] == KIND_NOTE_ON).sum()) for p in pieces])
    seconds = np.array([duration_steps(p, vocab) * tokenizer.step_s for p in pieces])
    bits = np.asarray(nats_by_piece, np.float64) / math.log(2)
    tokens = np.asarray(tokens_by_piece, np.int64)
    composers = [tokenizer.composer_of(p) or UNKNOWN_COMPOSER for p in pieces]
    everything = _rates(bits, tokens, notes, seconds)
    by_composer = {}
    for name in sorted(set(composers)):
        mine = np.array([c == name for c in composers])
        by_composer[name] = _rates(bits[mine], tokens[mine], notes[mine], seconds[mine])
    return {
        "bits_per_note": everything["bits_per_note"],
        "bits_per_second": everything["bits_per_second"],
        "notes": everything["notes"],
        "seconds": everything["seconds"],
        "by_composer": by_composer,
    }


def _rates(bits: np.ndarray, tokens: np.ndarray, notes: np.ndarray, seconds: np.ndarray) -> dict[str, Any]:
    total = float(bits.sum())
    return {
        "pieces": len(bits),
        "tokens": int(tokens.sum()),
        "notes": int(notes.sum()),
        "seconds": float(seconds.sum()),
        "bits_per_token": _ratio(total, tokens.sum()),
        "bits_per_note": _ratio(total, notes.sum()),
        "bits_per_second": _ratio(total, seconds.sum()),
    }


def _ratio(bits: float, denominator: float) -> float | None:
    return float(bits / denominator) if denominator > 0 else None
