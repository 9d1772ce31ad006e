"""The transformer block: pre-LayerNorm sparse self-attention and GELU MLP, each with a residual.

Parameters are float32 with logical axis names; matmuls run in the config's compute dtype; LayerNorm
statistics are taken in float32. Attention runs either over a whole sequence (training, prefill:
`musenet_jax.attention.backends.attend` on the configured backend) or for one new token against a KV cache
(decode: the pattern's row of allowed keys as the mask of the dense reference).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from musenet_jax.attention.backends import attend
from musenet_jax.attention.patterns import Pattern
from musenet_jax.attention.reference import masked_attention
from musenet_jax.model.config import ModelConfig
from musenet_jax.model.rotary import apply_rotary
from musenet_jax.model.sharding import constrain, logical_init

Shape = tuple[int, ...]
Names = tuple[str, ...]
KVTriple = tuple[jax.Array, jax.Array, jax.Array]

_KERNEL_INIT = nnx.initializers.normal(stddev=0.02)
_ZEROS = nnx.initializers.zeros_init()
_ONES = nnx.initializers.ones_init()


def layer_norm(cfg: ModelConfig, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """LayerNorm over embed, computed in float32."""
    return nnx.LayerNorm(
        cfg.d_model,
        epsilon=1e-5,
        dtype=jnp.float32,
        param_dtype=jnp.dtype(cfg.param_dtype),
        scale_init=logical_init(_ONES, ("embed",)),
        bias_init=logical_init(_ZEROS, ("embed",)),
        rngs=rngs,
    )


def flat_projection(projection: nnx.Einsum, x: jax.Array, out_shape: Shape) -> jax.Array:
    """`projection(x)` as one matmul over the flattened kernel: x [..., a] (or [..., h, k] flattened)
    against the kernel viewed as [a, b] -> [..., *out_shape]. The same numbers as the einsum, in the layout
    the attention kernels read: an einsum to [B, T, H, Dh] makes XLA copy q, k and v into their
    [B, T, H*Dh] rows (on TPU a head of 64 is half a 128-lane tile)."""
    x, kernel, bias = projection.promote_dtype(
        (x, projection.kernel[...], projection.bias[...]), dtype=projection.dtype
    )
    rows = math.prod(kernel.shape) // math.prod(out_shape)
    lead = x.shape[: x.ndim - (kernel.ndim - len(out_shape))]
    y = jnp.dot(x.reshape(*lead, rows), kernel.reshape(rows, -1)) + bias.reshape(-1)
    return y.reshape(*lead, *out_shape)


def allowed_row(patterns: tuple[Pattern, ...], n_heads: int, position: jax.Array, length: int) -> jax.Array:
    """[heads, length] keys that a query at `position` may see (causality included), per head group."""
    keys = jnp.arange(length, dtype=jnp.int32)
    rows = [jnp.broadcast_to(p.allowed(position, keys), (n_heads // len(patterns), length)) for p in patterns]
    return jnp.concatenate(rows, axis=0)


class SparseSelfAttention(nnx.Module):
    """Multi-head attention restricted to `patterns` (one per head group)."""

    def __init__(self, cfg: ModelConfig, patterns: tuple[Pattern, ...], *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.patterns = patterns
        d, h = cfg.d_model, cfg.n_heads
        self.head_dim = d // h
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)

        def projection(
            einsum: str, kernel_shape: Shape, kernel_names: Names, bias_shape: Shape, bias_names: Names
        ) -> nnx.Einsum:
            return nnx.Einsum(
                einsum,
                kernel_shape,
                bias_shape,
                dtype=dtype,
                param_dtype=param_dtype,
                kernel_init=logical_init(_KERNEL_INIT, kernel_names),
                bias_init=logical_init(_ZEROS, bias_names),
                rngs=rngs,
            )

        in_shape, in_names = (d, h, self.head_dim), ("embed", "heads", "kv")
        self.query = projection("btd,dhk->bthk", in_shape, in_names, (h, self.head_dim), ("heads", "kv"))
        self.key = projection("btd,dhk->bthk", in_shape, in_names, (h, self.head_dim), ("heads", "kv"))
        self.value = projection("btd,dhk->bthk", in_shape, in_names, (h, self.head_dim), ("heads", "kv"))
        self.out = projection(
            "bthk,hkd->btd", (h, self.head_dim, d), ("heads", "kv", "embed"), (d,), ("embed",)
        )

    def _qkv(self, x: jax.Array, positions: np.ndarray | jax.Array) -> KVTriple:
        """Projections of x [B, T, d] at `positions` [T] (numpy when known at trace time); with rotary
        positions q and k are rotated (the cache holds rotated keys: a decoded query meets them at their
        own positions)."""
        names = ("batch", "length", "heads", "kv")
        out_shape = (self.cfg.n_heads, self.head_dim)
        q, k, v = (
            constrain(flat_projection(p, x, out_shape), names) for p in (self.query, self.key, self.value)
        )
        if self.cfg.position_encoding == "rotary":
            q, k = (constrain(apply_rotary(a, positions), names) for a in (q, k))
        return q, k, v

    def __call__(self, x: jax.Array) -> KVTriple:
        """x [B, T, d] (a window from position 0) -> (out [B, T, d], k, v [B, T, H, Dh]); k/v feed the cache
        when prefilling."""
        q, k, v = self._qkv(x, np.arange(x.shape[1], dtype=np.int32))
        y = attend(
            q,
            k,
            v,
            self.patterns,
            backend=self.cfg.attention,
            block_size=self.cfg.block_size,
            fused_backward=self.cfg.pallas_backward == "fused",
        )
        return flat_projection(self.out, y, (self.cfg.d_model,)), k, v

    def decode(self, x: jax.Array, k_cache: jax.Array, v_cache: jax.Array, position: jax.Array) -> KVTriple:
        """One token x [B, 1, d] at `position` against caches [B, L, H, Dh] -> (out, k_cache, v_cache)."""
        q, k, v = self._qkv(x, position[None])
        k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), position, axis=1)
        v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), position, axis=1)
        k_cache, v_cache = (constrain(c, ("batch", "length", "heads", "kv")) for c in (k_cache, v_cache))
        allowed = allowed_row(self.patterns, self.cfg.n_heads, position, k_cache.shape[1])
        y = masked_attention(q, k_cache.astype(q.dtype), v_cache.astype(q.dtype), allowed[None, :, None, :])
        return flat_projection(self.out, y, (self.cfg.d_model,)), k_cache, v_cache


class Mlp(nnx.Module):
    """d -> mlp_ratio * d -> d with GELU."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, hidden = cfg.d_model, cfg.mlp_ratio * cfg.d_model
        kw = dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)
        self.up = nnx.Linear(
            d,
            hidden,
            kernel_init=logical_init(_KERNEL_INIT, ("embed", "mlp")),
            bias_init=logical_init(_ZEROS, ("mlp",)),
            **kw,
        )
        self.down = nnx.Linear(
            hidden,
            d,
            kernel_init=logical_init(_KERNEL_INIT, ("mlp", "embed")),
            bias_init=logical_init(_ZEROS, ("embed",)),
            **kw,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        h = constrain(jax.nn.gelu(self.up(x)), ("batch", "length", "mlp"))
        return self.down(h)


class Block(nnx.Module):
    """x + attn(ln(x)), then x + mlp(ln(x)); the residual stream stays in the compute dtype."""

    def __init__(self, cfg: ModelConfig, patterns: tuple[Pattern, ...], *, rngs: nnx.Rngs):
        self.dtype = jnp.dtype(cfg.dtype)
        self.attn_norm = layer_norm(cfg, rngs=rngs)
        self.attn = SparseSelfAttention(cfg, patterns, rngs=rngs)
        self.mlp_norm = layer_norm(cfg, rngs=rngs)
        self.mlp = Mlp(cfg, rngs=rngs)

    def _finish(self, x: jax.Array, attn_out: jax.Array) -> jax.Array:
        x = x + attn_out.astype(self.dtype)
        x = x + self.mlp(self.mlp_norm(x).astype(self.dtype)).astype(self.dtype)
        return constrain(x, ("batch", "length", "embed"))

    def __call__(self, x: jax.Array) -> KVTriple:
        """x [B, T, d] -> (x, k, v)."""
        attn_out, k, v = self.attn(self.attn_norm(x).astype(self.dtype))
        return self._finish(x, attn_out), k, v

    def decode(self, x: jax.Array, k_cache: jax.Array, v_cache: jax.Array, position: jax.Array) -> KVTriple:
        """One token x [B, 1, d] at `position` against this block's caches -> (x, k_cache, v_cache)."""
        attn_out, k_cache, v_cache = self.attn.decode(
            self.attn_norm(x).astype(self.dtype), k_cache, v_cache, position
        )
        return self._finish(x, attn_out), k_cache, v_cache
