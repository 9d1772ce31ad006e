"""The KV cache for sampling: keys and values of every layer for up to `max_len` positions.

Shapes follow the layer stacking of `MuseNet` ([groups, blocks per group, ...], see transformer.py)
so decoding scans over layer groups like training does. All sequences of a batch advance together:
`length` is the number of positions already filled (the position of the next token).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

# Logical axis names of k and v (sharding.py maps them to mesh axes).
CACHE_AXES: tuple[str | None, ...] = ("layers", None, "batch", "length", "heads", "kv")


@struct.dataclass
class KVCache:
    """k, v: [layer groups, blocks per group, batch, max_len, heads, head_dim]; length: int32 scalar;
    held: int32 [batch, slots], how many notes of each slot sound after the last token (slots = 0 when
    the model uses no sounding-notes input or mask)."""

    k: jax.Array
    v: jax.Array
    length: jax.Array
    held: jax.Array

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    @classmethod
    def zeros(
        cls,
        groups: int,
        per_group: int,
        batch: int,
        max_len: int,
        heads: int,
        head_dim: int,
        dtype: jnp.dtype,
        slots: int = 0,
    ) -> KVCache:
        shape = (groups, per_group, batch, max_len, heads, head_dim)
        zeros = jnp.zeros(shape, dtype)
        return cls(zeros, zeros, jnp.zeros((), jnp.int32), jnp.zeros((batch, slots), jnp.int32))
