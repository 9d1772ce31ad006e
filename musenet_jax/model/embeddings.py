"""MuseNet's input embedding: token + position + timing + piece position + countdown to the end.

All five are learned tables summed into one vector per token (the position table only with
`position_encoding: learned`; rotary positions act inside attention instead, model/rotary.py). The
extra ones tell the model where in musical time it is, not just where in the token stream:
- timing: the absolute time of the token (`times`, in encoding time steps of `time_step_ms`) in
  buckets of `time_bucket_ms`, clipped to `time_buckets`; simultaneous notes share it;
- piece position: which of `structure_parts` equal parts of the whole piece the token falls in
  (times * parts // durations), so the model knows beginnings from endings;
- countdown: the time left until the piece ends (durations - times), in log-spaced buckets: bucket
  b covers remaining times whose log1p(remaining / time_bucket) is in the b-th of `countdown_buckets`
  equal slices of [0, log1p(time_buckets)]. Near the end a bucket is one time bucket wide (the model
  must know when to stop), far from it buckets are coarse (minutes ahead, seconds hardly matter).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from musenet_jax.model.config import ModelConfig
from musenet_jax.model.sharding import constrain, logical_init

_EMBED_INIT = nnx.initializers.normal(stddev=0.02)


def time_buckets(times: jax.Array, cfg: ModelConfig, time_step_ms: int) -> jax.Array:
    """Absolute time (encoding steps) -> timing bucket in [0, time_buckets)."""
    bucket = times.astype(jnp.int32) * time_step_ms // cfg.time_bucket_ms
    return jnp.clip(bucket, 0, cfg.time_buckets - 1)


def piece_parts(times: jax.Array, durations: jax.Array, cfg: ModelConfig) -> jax.Array:
    """Which of `structure_parts` equal parts of the piece each token falls in; times [B, T],
    durations [B]."""
    total = jnp.maximum(durations.astype(jnp.int32), 1)[:, None]
    part = times.astype(jnp.int32) * cfg.structure_parts // total
    return jnp.clip(part, 0, cfg.structure_parts - 1)


def countdown_buckets(
    times: jax.Array, durations: jax.Array, cfg: ModelConfig, time_step_ms: int
) -> jax.Array:
    """Log-spaced bucket of the time left until the piece ends (see the module docstring)."""
    left = jnp.maximum(durations.astype(jnp.int32)[:, None] - times.astype(jnp.int32), 0)
    left_buckets = left.astype(jnp.float32) * (time_step_ms / cfg.time_bucket_ms)
    scale = (cfg.countdown_buckets - 1) / math.log1p(cfg.time_buckets)
    bucket = jnp.floor(jnp.log1p(left_buckets) * scale).astype(jnp.int32)
    return jnp.clip(bucket, 0, cfg.countdown_buckets - 1)


class MusicEmbedding(nnx.Module):
    """Sum of the five embeddings; tables are [rows, embed], sharded on embed."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, time_step_ms: int, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.time_step_ms = time_step_ms
        dtype = jnp.dtype(cfg.dtype)

        def table(rows: int, names: tuple[str | None, str]) -> nnx.Embed:
            return nnx.Embed(
                rows,
                cfg.d_model,
                dtype=dtype,
                param_dtype=jnp.dtype(cfg.param_dtype),
                embedding_init=logical_init(_EMBED_INIT, names),
                rngs=rngs,
            )

        self.token = table(vocab_size, ("vocab", "embed"))
        self.position = table(cfg.context, (None, "embed")) if cfg.position_encoding == "learned" else None
        self.timing = table(cfg.time_buckets, (None, "embed"))
        self.part = table(cfg.structure_parts, (None, "embed"))
        self.countdown = table(cfg.countdown_buckets, (None, "embed"))

    def __call__(
        self, inputs: jax.Array, positions: jax.Array, times: jax.Array, durations: jax.Array
    ) -> jax.Array:
        """inputs/positions/times [B, T] int, durations [B] -> [B, T, d_model] in the compute dtype."""
        cfg = self.cfg
        x = (
            _lookup(self.token, inputs)
            + _lookup(self.timing, time_buckets(times, cfg, self.time_step_ms))
            + _lookup(self.part, piece_parts(times, durations, cfg))
            + _lookup(self.countdown, countdown_buckets(times, durations, cfg, self.time_step_ms))
        )
        return x if self.position is None else x + _lookup(self.position, positions)


def _lookup(table: nnx.Embed, ids: jax.Array) -> jax.Array:
    """Rows of a table gathered whole first, as FSDP gathers any weight before use: a lookup into a
    table sharded on embed would give embed-sharded rows that XLA can only reshard to batch-sharded
    activations by replicating the whole [B, T, d_model] output on every device."""
    weights = constrain(table.embedding[...], (None, None)).astype(table.dtype)
    return constrain(jnp.take(weights, ids, axis=0), ("batch", "length", "embed"))
