"""`attend`: sparse causal attention with one pattern per head group, on a chosen backend.

Backends: `dense` (masked reference, all n^2 scores), `xla_blocksparse` (only the layout's active
blocks, plain XLA) and `pallas` (the Pallas kernels of pallas_kernels/sparse_flash.py, placed on the mesh by
pallas_backend.py). `xla_blocksparse` runs `sparse_attend`: it gathers q/k/v into each layout component's
slot order, runs a component function `(q, k, v, BlockLayout) -> (out, lse)` and merges the components by
log-sum-exp (see layouts.py). `pallas` runs a pattern's components as one op (sparse_flash.merged_attention)
on the [B, L, H * D] view of q/k/v: folded, natural or sliced slot orders reached by reshapes and slices, the
merge inside the last component's forward kernel, a backward on the merged lse and delta."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from musenet_jax.attention.layouts import BlockLayout, PatternLayout, make_layout
from musenet_jax.attention.pallas_backend import pallas_attend
from musenet_jax.attention.patterns import Pattern
from musenet_jax.attention.reference import dense_attention
from musenet_jax.attention.xla_blocksparse import blocksparse_attention
from musenet_jax.errors import UserError, unknown_choice
from pallas_kernels.sparse_flash import MIN_BLOCK, RESIDUAL_NAMES, BlockSizeError, pallas_block_size

BACKENDS: tuple[str, ...] = ("dense", "xla_blocksparse", "pallas")
# Checkpoint names of the values a remat policy should save so that the backward pass does not run the
# attention forward again (the Pallas kernels' output and log-sum-exp per component).
ATTENTION_RESIDUALS: tuple[str, ...] = RESIDUAL_NAMES

ComponentFn = Callable[[jax.Array, jax.Array, jax.Array, BlockLayout], tuple[jax.Array, jax.Array]]


def _to_slots(x: jax.Array, index: np.ndarray, natural: bool) -> jax.Array:
    """[B, T, H, D] -> [B, slots, H, D]; slot -1 reads a zero row."""
    seq_len = x.shape[1]
    if natural:
        return jnp.pad(x, ((0, 0), (0, index.size - seq_len), (0, 0), (0, 0)))
    padded = jnp.pad(x, ((0, 0), (0, 1), (0, 0), (0, 0)))
    return jnp.take(padded, jnp.asarray(np.where(index < 0, seq_len, index)), axis=1)


def _from_slots(y: jax.Array, q_slot: np.ndarray, natural: bool) -> jax.Array:
    """Rows of slot order back to positions: [B, slots, ...] -> [B, T, ...]."""
    return y[:, : q_slot.size] if natural else jnp.take(y, jnp.asarray(q_slot), axis=1)


def sparse_attend(
    q: jax.Array, k: jax.Array, v: jax.Array, layout: PatternLayout, component_fn: ComponentFn
) -> jax.Array:
    """Run every component of `layout` with `component_fn` and merge them exactly; q/k/v [B, T, H, D]."""
    q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
    outs, lses = [], []
    for comp in layout.components:
        if comp.fold > 1:  # positions folded into heads: a reshape each way, no gather (layouts.py)
            batch, length, heads, dim = q.shape
            out, lse = component_fn(
                *(x.reshape(batch, length // comp.fold, comp.fold * heads, dim) for x in (q, k, v)),
                comp.layout,
            )
            outs.append(out.reshape(q.shape).astype(jnp.float32))
            lses.append(lse.reshape(batch, length, heads))
            continue
        q_natural, kv_natural = comp.q_is_natural, comp.kv_is_natural
        out, lse = component_fn(
            _to_slots(q, comp.q_index, q_natural),
            _to_slots(k, comp.kv_index, kv_natural),
            _to_slots(v, comp.kv_index, kv_natural),
            comp.layout,
        )
        outs.append(_from_slots(out.astype(jnp.float32), comp.q_slot, q_natural))
        lses.append(_from_slots(lse, comp.q_slot, q_natural))
    if len(outs) == 1:
        return outs[0].astype(q.dtype)
    lse = jnp.stack(lses)  # [C, B, T, H]
    top = lax.stop_gradient(lse.max(axis=0))
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    weights = jnp.exp(lse - top)  # 0 for components that see no key of a row
    total = weights.sum(axis=0)
    merged = sum(w[..., None] * o for w, o in zip(weights, outs))
    return (merged / jnp.where(total > 0, total, 1.0)[..., None]).astype(q.dtype)


def backend_layout(pattern: Pattern, seq_len: int, *, backend: str, block_size: int) -> PatternLayout:
    """The layout `backend` runs for `pattern`. The XLA path keeps small blocks; the Pallas kernels get
    power-of-two blocks of at least sparse_flash.MIN_BLOCK (128) on both sides (pallas_block_size)."""
    if backend != "pallas":
        return make_layout(pattern, seq_len, block_size)
    try:
        block = pallas_block_size(block_size)
    except BlockSizeError as err:
        raise UserError(str(err)) from None
    return make_layout(pattern, seq_len, block, min_block_size=MIN_BLOCK)


def attend(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    patterns: tuple[Pattern, ...],
    *,
    backend: str,
    block_size: int,
    fused_backward: bool = False,
) -> jax.Array:
    """Causal sparse attention; q/k/v [batch, seq, heads, head_dim]; heads split evenly over `patterns`
    (one entry: all heads share it). Scale 1/sqrt(head_dim) applied inside. `fused_backward` chooses the
    Pallas TPU kernels' one-kernel backward (`model.pallas_backward`); other backends ignore it."""
    if backend not in BACKENDS:
        raise unknown_choice("attention backend", backend, BACKENDS)
    heads, groups = q.shape[2], len(patterns)
    if groups == 0 or heads % groups:
        raise UserError(f"{heads} attention heads cannot be split evenly over {groups} patterns")
    per_group = heads // groups
    outs = []
    for g, pattern in enumerate(patterns):
        heads_g = slice(g * per_group, (g + 1) * per_group)
        qg, kg, vg = q[:, :, heads_g], k[:, :, heads_g], v[:, :, heads_g]
        if backend == "dense":
            outs.append(dense_attention(qg, kg, vg, pattern))
        elif backend == "pallas":  # the components as one op: merged in the forward, no merge differentiated
            layout = backend_layout(pattern, q.shape[1], backend=backend, block_size=block_size)
            outs.append(pallas_attend(qg, kg, vg, layout, fused_backward=fused_backward))
        else:
            layout = backend_layout(pattern, q.shape[1], backend=backend, block_size=block_size)
            outs.append(sparse_attend(qg, kg, vg, layout, blocksparse_attention))
    return outs[0] if groups == 1 else jnp.concatenate(outs, axis=2)
