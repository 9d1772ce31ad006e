"""Dense masked attention: the reference every sparse backend must match (and the `dense` backend)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from musenet_jax.attention.patterns import Pattern
from pallas_kernels.block_layout import MASKED_SCORE


def masked_attention(q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(d) where allowed) v; q [B, Tq, H, D], k/v [B, Tk, H, D],
    `allowed` boolean broadcastable to [B, H, Tq, Tk]. Scores and softmax in float32."""
    scale = q.shape[-1] ** -0.5
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    scores = jnp.where(allowed, scores, MASKED_SCORE)
    probs = jnp.where(allowed, jax.nn.softmax(scores, axis=-1), 0.0)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return out.astype(q.dtype)


def pattern_mask(pattern: Pattern, seq_len: int) -> jax.Array:
    """[seq_len, seq_len] boolean mask built from iotas, so under jit it is computed, not a huge constant."""
    pos = jnp.arange(seq_len, dtype=jnp.int32)
    return pattern.allowed(pos[:, None], pos[None, :])


def dense_attention(q: jax.Array, k: jax.Array, v: jax.Array, pattern: Pattern) -> jax.Array:
    """Causal attention restricted to `pattern`, computing all n^2 scores."""
    return masked_attention(q, k, v, pattern_mask(pattern, q.shape[1]))
