"""The model's loss per token: what training minimises and evaluation reports, in one place."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Negative log-likelihood of each target token, in nats, computed in float32."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
