"""Held-out negative log-likelihood in bits per token, overall and by the kind of the predicted token."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
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


@dataclasses.dataclass(frozen=True)
class PieceScores:
    """Summed negative log-likelihood (nats) and scored-token counts, by kind group and by piece."""

    nats_by_kind: np.ndarray  # [len(KIND_GROUPS)]
    tokens_by_kind: np.ndarray
    nats_by_piece: np.ndarray  # [pieces]
    tokens_by_piece: np.ndarray


def score_pieces(model: Any, tokenizer: Tokenizer, pieces: Sequence[np.ndarray]) -> PieceScores:
    """Scores every token of the pieces after the first, each once (see `windows.py`)."""
    graphdef, params = nnx.split(model)
    group_of = np.full(len(tokenizer.vocab.token_kinds), -1, np.int64)
    for g, kinds in enumerate(KIND_GROUPS.values()):
        group_of[np.isin(tokenizer.vocab.token_kinds, kinds)] = g
    nats, counts = np.zeros(len(KIND_GROUPS)), np.zeros(len(KIND_GROUPS))
    piece_nats, piece_counts = np.zeros(len(pieces)), np.zeros(len(pieces))
    for rows in batched_windows(tokenizer, pieces, model.cfg.context, EVAL_BATCH):
        keys = ("inputs", "targets", "times", "durations", "sounding_head")
        arrays = {k: jnp.asarray(rows[k]) for k in keys}
        nll = np.asarray(_window_nll(graphdef, params, arrays), np.float64)
        groups = group_of[rows["targets"]]
        scored = (rows["scored"] > 0) & (groups >= 0)
        np.add.at(nats, groups[scored], nll[scored])
        np.add.at(counts, groups[scored], 1)
        piece_of = np.broadcast_to(rows["piece"][:, None], scored.shape)
        np.add.at(piece_nats, piece_of[scored], nll[scored])
        np.add.at(piece_counts, piece_of[scored], 1)
    return PieceScores(nats, counts, piece_nats, piece_counts)


def token_nlls(model: Any, tokenizer: Tokenizer, pieces: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per piece, the negative log-likelihood (nats) of each token as scored in `score_pieces` (NaN for
    the first token, which nothing predicts): for scores of chosen tokens only."""
    graphdef, params = nnx.split(model)
    out = [np.full(len(ids), np.nan) for ids in pieces]
    for rows in batched_windows(tokenizer, pieces, model.cfg.context, EVAL_BATCH):
        keys = ("inputs", "targets", "times", "durations", "sounding_head")
        arrays = {k: jnp.asarray(rows[k]) for k in keys}
        nll = np.asarray(_window_nll(graphdef, params, arrays), np.float64)
        for r, c in zip(*np.nonzero(rows["scored"] > 0)):
            out[rows["piece"][r]][rows["target_index"][r, c]] = nll[r, c]
    return out


def bits_per_token(model: Any, tokenizer: Tokenizer, pieces: Sequence[np.ndarray]) -> dict[str, Any]:
    """{"bits_per_token", "bits_per_token_by_kind": {group: bits}, "tokens", "tokens_by_kind"} over every
    token of the pieces after the first (each scored once, see `windows.py`)."""
    return token_report(score_pieces(model, tokenizer, pieces))


def token_report(scores: PieceScores) -> dict[str, Any]:
    """The bits-per-token part of a report (see `bits_per_token`)."""
    bits, counts = scores.nats_by_kind / math.log(2), scores.tokens_by_kind
    return {
        "bits_per_token": float(bits.sum() / max(counts.sum(), 1)),
        "bits_per_token_by_kind": {
            name: (float(bits[g] / counts[g]) if counts[g] else None) for g, name in enumerate(KIND_GROUPS)
        },
        "tokens": int(counts.sum()),
        "tokens_by_kind": {name: int(counts[g]) for g, name in enumerate(KIND_GROUPS)},
    }
