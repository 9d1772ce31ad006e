"""Rotary position embeddings (RoFormer, Su et al. 2021): relative positions for attention.

Queries and keys are rotated pairwise by an angle proportional to their position, so a query-key score
depends on the distance between them, not on where in the window they sit. A motif heard 300 tokens ago
reads the same to the model wherever the window starts; a learned absolute table (the default) must learn
each offset at every position again. The rotation pairs dimension i with i + head_dim / 2 (the GPT-NeoX
layout: two contiguous halves, no interleaving), in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ROTARY_BASE = 10_000.0  # RoFormer's base: wavelengths from 2 pi to about 2 pi x 10,000 tokens


def rotary_angles(positions: jax.Array, head_dim: int, base: float = ROTARY_BASE) -> jax.Array:
    """float32 [..., head_dim / 2] rotation angles of integer `positions` [...]."""
    half = head_dim // 2
    inverse_frequencies = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    return positions.astype(jnp.float32)[..., None] * inverse_frequencies


def apply_rotary(x: jax.Array, positions: jax.Array) -> jax.Array:
    """x [B, T, H, D] rotated by its positions [T] (or [B, T]); same shape and dtype."""
    head_dim = x.shape[-1]
    angles = rotary_angles(positions, head_dim)[..., None, :]  # [(B,) T, 1, D/2]: shared by the heads
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    first, second = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return rotated.astype(x.dtype)
