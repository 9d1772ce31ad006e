"""Whole pieces -> model rows: consecutive windows, each with the conditioning prefix at its head.

Training sees random crops; scoring a piece (bits per token, the critic's verdict) needs all of it.
Row w holds `prefix + body[w*S : w*S + S]` with S = context + 1 - prefix length, so inputs and
targets (shifted by one) are both `context` long and every token after the first is a scored target
exactly once: the prefix tokens in the first window, the body tokens in the window that holds them.
The first body token of a later window is predicted from the prefix alone, a small pessimism; the notes
sounding at a window's head (`sounding_head`) come from the piece before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from musenet_jax.encoding.slots import held_before, note_slots
from musenet_jax.encoding.timing import duration_steps, token_times
from musenet_jax.encoding.tokenizer import Tokenizer

Rows = dict[str, np.ndarray]


def piece_windows(tokenizer: Tokenizer, ids: np.ndarray, context: int) -> Rows:
    """Rows of one piece: inputs, targets, times [n, context]; scored (targets to count) and valid (inputs
    holding tokens) float32 [n, context]; durations [n]; sounding_head int32 [n, slots] (notes held into
    each window)."""
    vocab = tokenizer.vocab
    slots = note_slots(vocab)
    ids = np.asarray(ids, np.int32)
    times = token_times(ids, vocab)
    n_prefix = min(tokenizer.prefix_length(ids), context // 2)
    span = context + 1 - n_prefix
    body = max(len(ids) - n_prefix, 1)
    count = -(-body // span)
    inputs = np.full((count, context + 1), vocab.pad_id, np.int32)
    row_times = np.zeros((count, context + 1), np.int32)
    scored = np.zeros((count, context), np.float32)
    valid = np.zeros((count, context), np.float32)
    heads = np.zeros((count, slots.count), np.int32)
    target_index = np.full((count, context), -1, np.int32)
    for w in range(count):
        heads[w] = held_before(ids, n_prefix + w * span, slots)
        take = np.concatenate(
            [np.arange(n_prefix), np.arange(n_prefix + w * span, min(n_prefix + (w + 1) * span, len(ids)))]
        )
        inputs[w, : len(take)], row_times[w, : len(take)] = ids[take], times[take]
        first = 0 if w == 0 else n_prefix - 1
        scored[w, first : len(take) - 1] = 1.0
        target_index[w, : len(take) - 1] = take[1:]
        valid[w, : min(len(take), context)] = 1.0
    return {
        "inputs": inputs[:, :-1],
        "targets": inputs[:, 1:],
        "times": row_times[:, :-1],
        "scored": scored,
        "valid": valid,
        "durations": np.full(count, max(duration_steps(ids, vocab), 1), np.int32),
        "sounding_head": heads,
        "target_index": target_index,  # where each target is in `ids` (-1: padding)
        "piece": np.zeros(count, np.int32),
    }


def batched_windows(
    tokenizer: Tokenizer, pieces: Iterable[np.ndarray], context: int, batch: int
) -> Iterator[Rows]:
    """Windows of many pieces in batches of exactly `batch` rows (the last padded with empty rows);
    `piece` names each row's piece (index in `pieces`), -1 on padding."""
    pending: list[Rows] = []
    rows = 0
    for index, ids in enumerate(pieces):
        windows = piece_windows(tokenizer, ids, context)
        windows["piece"][:] = index
        pending.append(windows)
        rows += len(windows["piece"])
        while rows >= batch:
            merged = _concat(pending)
            yield {k: v[:batch] for k, v in merged.items()}
            rest = {k: v[batch:] for k, v in merged.items()}
            rows = len(rest["piece"])
            pending = [rest] if rows else []
    if rows:
        merged = _concat(pending)
        yield {
            k: _pad(v, batch, -1 if k == "piece" else (1 if k == "durations" else 0))
            for k, v in merged.items()
        }


def _concat(parts: list[Rows]) -> Rows:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _pad(array: np.ndarray, rows: int, value: int) -> np.ndarray:
    out = np.full((rows, *array.shape[1:]), value, array.dtype)
    out[: len(array)] = array
    return out
