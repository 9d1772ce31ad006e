"""Held-out negative log-likelihood in bits per token, overall, by the kind of the predicted token and by its
position in the model's context window (does the model use the far context?)."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from musenet_jax.data.windows import batched_windows
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.encoding.vocab import (
    KIND_COMPOSER,
    KIND_END,
    KIND_INSTRUMENT,
    KIND_NOTE_OFF,
    KIND_NOTE_ON,
    KIND_START,
    KIND_WAIT,
)
from musenet_jax.model.loss import token_nll

# Report groups of token kinds; the conditioning prefix counts as one.
KIND_GROUPS: dict[str, tuple[int, ...]] = {
    "note_on": (KIND_NOTE_ON,),
    "note_off": (KIND_NOTE_OFF,),
    "wait": (KIND_WAIT,),
    "prefix": (KIND_COMPOSER, KIND_INSTRUMENT, KIND_START),
    "end": (KIND_END,),
}
EVAL_BATCH = 8


@functools.partial(jax.jit, static_argnums=0)
def _window_nll(graphdef: nnx.GraphDef, params: Any, rows: dict[str, jax.Array]) -> jax.Array:
    model = nnx.merge(graphdef, params)
    logits = model(rows["inputs"], rows["times"], rows["durations"], sounding_head=rows["sounding_head"])
    return token_nll(logits, rows["targets"])


def _scored_windows(
    model: Any, tokenizer: Tokenizer, pieces: Sequence[np.ndarray], window: int
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """The pieces' batches of `window`-token rows (`windows.py`) with each target's negative
    log-likelihood in nats, [rows, window]: the one pass both scorers below read."""
    graphdef, params = nnx.split(model)
    keys = ("inputs", "targets", "times", "durations", "sounding_head")
    for rows in batched_windows(tokenizer, pieces, window, EVAL_BATCH):
        arrays = {k: jnp.asarray(rows[k]) for k in keys}
        yield rows, np.asarray(_window_nll(graphdef, params, arrays), np.float64)


@dataclasses.dataclass(frozen=True)
class PieceScores:
    """Summed negative log-likelihood (nats) and scored-token counts, by kind group, by piece and by
    position in the window (position p: the target predicted from the window's first p + 1 tokens)."""

    nats_by_kind: np.ndarray  # [len(KIND_GROUPS)]
    tokens_by_kind: np.ndarray
    nats_by_piece: np.ndarray  # [pieces]
    tokens_by_piece: np.ndarray
    nats_by_position: np.ndarray  # [context]
    tokens_by_position: np.ndarray


def score_pieces(
    model: Any, tokenizer: Tokenizer, pieces: Sequence[np.ndarray], window: int | None = None
) -> PieceScores:
    """Scores every token of the pieces after the first, each once (see `windows.py`): windows are the
    model's context long (or `window` tokens: the same tokens seen with less of the past, to measure what
    the far context gives), so a piece longer than a window fills every position, a shorter one the first
    ones."""
    window = model.cfg.context if window is None else window
    group_of = np.full(len(tokenizer.vocab.token_kinds), -1, np.int64)
    for g, kinds in enumerate(KIND_GROUPS.values()):
        group_of[np.isin(tokenizer.vocab.token_kinds, kinds)] = g
    nats, counts = np.zeros(len(KIND_GROUPS)), np.zeros(len(KIND_GROUPS))
    piece_nats, piece_counts = np.zeros(len(pieces)), np.zeros(len(pieces))
    position_nats, position_counts = np.zeros(window), np.zeros(window)
    for rows, nll in _scored_windows(model, tokenizer, pieces, window):
        groups = group_of[rows["targets"]]
        scored = (rows["scored"] > 0) & (groups >= 0)
        np.add.at(nats, groups[scored], nll[scored])
        np.add.at(counts, groups[scored], 1)
        piece_of = np.broadcast_to(rows["piece"][:, None], scored.shape)
        np.add.at(piece_nats, piece_of[scored], nll[scored])
        np.add.at(piece_counts, piece_of[scored], 1)
        position = np.broadcast_to(np.arange(scored.shape[1]), scored.shape)
        np.add.at(position_nats, position[scored], nll[scored])
        np.add.at(position_counts, position[scored], 1)
    return PieceScores(nats, counts, piece_nats, piece_counts, position_nats, position_counts)


def token_nlls(model: Any, tokenizer: Tokenizer, pieces: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per piece, the negative log-likelihood (nats) of each token as scored in `score_pieces` (NaN for
    the first token, which nothing predicts): for scores of chosen tokens only."""
    out = [np.full(len(ids), np.nan) for ids in pieces]
    for rows, nll in _scored_windows(model, tokenizer, pieces, model.cfg.context):
        for r, c in zip(*np.nonzero(rows["scored"] > 0)):
            out[rows["piece"][r]][rows["target_index"][r, c]] = nll[r, c]
    return out


def row_nlls(model: Any, rows: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    """float64 [len(rows), context]: the negative log-likelihood (nats) of each target of rows built by the
    caller (inputs, targets, times [context]; durations scalar; sounding_head [slots]), for scores whose
    windows are not a piece's consecutive ones (a span with its own past, `infill_spans.py`)."""
    graphdef, params = nnx.split(model)
    keys = ("inputs", "targets", "times", "durations", "sounding_head")
    out = []
    for first in range(0, len(rows), EVAL_BATCH):
        chunk = list(rows[first : first + EVAL_BATCH])
        chunk += [chunk[-1]] * (EVAL_BATCH - len(chunk))  # one compiled shape
        arrays = {k: jnp.asarray(np.stack([np.asarray(r[k]) for r in chunk])) for k in keys}
        nll = np.asarray(_window_nll(graphdef, params, arrays), np.float64)
        out.append(nll[: min(EVAL_BATCH, len(rows) - first)])
    return np.concatenate(out) if out else np.zeros((0, model.cfg.context))


def bits_per_token(model: Any, tokenizer: Tokenizer, pieces: Sequence[np.ndarray]) -> dict[str, Any]:
    """{"bits_per_token", "bits_per_token_by_kind": {group: bits}, "tokens", "tokens_by_kind",
    "bits_per_token_by_position"} over every token of the pieces after the first (each scored once, see
    `windows.py`)."""
    return token_report(score_pieces(model, tokenizer, pieces))


def token_report(scores: PieceScores, position_bucket: int | None = None) -> dict[str, Any]:
    """The bits-per-token part of a report (see `bits_per_token`), with bits/token by position in the
    window in buckets of `position_bucket` positions (default: the context in `POSITION_BUCKETS`)."""
    bits, counts = scores.nats_by_kind / math.log(2), scores.tokens_by_kind
    return {
        "bits_per_token": float(bits.sum() / max(counts.sum(), 1)),
        "bits_per_token_by_kind": {
            name: (float(bits[g] / counts[g]) if counts[g] else None) for g, name in enumerate(KIND_GROUPS)
        },
        "tokens": int(counts.sum()),
        "tokens_by_kind": {name: int(counts[g]) for g, name in enumerate(KIND_GROUPS)},
        "bits_per_token_by_position": by_position(scores, position_bucket),
    }


POSITION_BUCKETS = 8


def by_position(scores: PieceScores, bucket: int | None = None) -> list[dict[str, Any]]:
    """[{"first", "last" (positions, inclusive), "tokens", "bits_per_token" (None without tokens)}] over
    consecutive buckets of `bucket` positions of the context window."""
    context = len(scores.tokens_by_position)
    width = bucket if bucket is not None else max(context // POSITION_BUCKETS, 1)
    rows = []
    for first in range(0, context, width):
        nats = scores.nats_by_position[first : first + width].sum()
        tokens = int(scores.tokens_by_position[first : first + width].sum())
        rows.append(
            {
                "first": first,
                "last": min(first + width, context) - 1,
                "tokens": tokens,
                "bits_per_token": float(nats / math.log(2) / tokens) if tokens else None,
            }
        )
    return rows
