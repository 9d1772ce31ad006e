"""The critic's verdict on whole token sequences: P(real) from the mean critic logit over their windows."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from musenet_jax.data.windows import batched_windows
from musenet_jax.encoding.tokenizer import Tokenizer

SCORE_BATCH = 8  # windows per jitted call (one compile)


@functools.partial(jax.jit, static_argnums=0)
def _window_logits(graphdef: nnx.GraphDef, params: Any, rows: dict[str, jax.Array]) -> jax.Array:
    model = nnx.merge(graphdef, params)
    return model.critic_logits(rows["inputs"], rows["times"], rows["durations"], rows["valid"])


def critic_logits(model: Any, tokenizer: Tokenizer, sequences: Sequence[np.ndarray]) -> np.ndarray:
    """One logit per sequence: the mean of the critic's logits over the sequence's context windows."""
    graphdef, params = nnx.split(model)
    sums = np.zeros(len(sequences))
    counts = np.zeros(len(sequences))
    for rows in batched_windows(tokenizer, sequences, model.cfg.context, SCORE_BATCH):
        arrays = {k: jnp.asarray(rows[k]) for k in ("inputs", "times", "durations", "valid")}
        logits = np.asarray(_window_logits(graphdef, params, arrays))
        real = rows["piece"] >= 0
        np.add.at(sums, rows["piece"][real], logits[real])
        np.add.at(counts, rows["piece"][real], 1)
    return sums / np.maximum(counts, 1)


def probability_real(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


@dataclasses.dataclass(frozen=True, eq=False)
class Critic:
    """A trained critic (a model whose critic head is the trained one) with the tokenizer it reads with."""

    model: Any
    tokenizer: Tokenizer

    def score(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """P(real) of each token sequence."""
        return probability_real(critic_logits(self.model, self.tokenizer, sequences))
