"""The `pallas` backend: a pattern's components as one op of `pallas_kernels.sparse_flash`, placed on the
mesh. Mosaic and Triton kernels are not auto-partitioned, so on a mesh each device runs them on its own
shard inside `jax.shard_map`, split over batch and heads exactly as the model shards q, k and v (the
kernel package itself knows no mesh)."""

from __future__ import annotations

import functools
import logging
import math

import jax
import numpy as np
from jax.sharding import PartitionSpec

from musenet_jax.attention.layouts import PatternLayout
from pallas_kernels.sparse_flash import Part, merged_attention

# Mesh axes that split batch and heads inside shard_map: those of the model's logical axis rules
# (musenet_jax.model.sharding.LOGICAL_AXIS_RULES "batch" / "heads"; the model sits above this package, so
# this is a copy, and a test keeps the two equal), so nothing moves between devices around the kernels.
BATCH_AXES: tuple[str, ...] = ("data", "fsdp")
HEAD_AXES: tuple[str, ...] = ("tensor",)

_log = logging.getLogger(__name__)


@functools.cache
def _say_interpret_once() -> None:
    _log.warning(
        "attention backend 'pallas' on a CPU host: executed on CPU the kernels run in Pallas interpret mode "
        "(slow, meant for tests); programs compiled for TPU or GPU get the real kernels"
    )


def _axes(mesh, names: tuple[str, ...], size: int) -> tuple[str, ...]:
    """The mesh axes among `names` that evenly split a dimension of `size` (as the model's rules do)."""
    axes: list[str] = []
    for name in names:
        if name in mesh.shape and size % (math.prod(mesh.shape[a] for a in axes) * mesh.shape[name]) == 0:
            axes.append(name)
    return tuple(axes)


def _tail(index: np.ndarray, seq_len: int) -> tuple[int, int] | None:
    """(l, c) when the slots hold the last c of every l positions in order (fixed(l, c)'s summary keys,
    then zero padding), so the kernels read them in place or a strided slice reaches them; None
    otherwise."""
    real = index[index >= 0]
    if real.size == 0 or not np.all(index[real.size :] == -1):
        return None
    gaps = np.flatnonzero(np.diff(real) > 1)
    tail = int(gaps[0]) + 1 if gaps.size else int(real.size)  # the first run: the first block's summary
    stride = int(real[0]) + tail
    if seq_len % stride:
        return None
    expected = (np.arange(seq_len)[np.arange(seq_len) % stride >= stride - tail]).astype(index.dtype)
    return (stride, tail) if np.array_equal(real, expected) else None


def _parts(layout: PatternLayout) -> tuple[Part, ...]:
    """The layout's components as the kernels' merged op takes them (index arrays only where a component
    is neither folded, nor in natural order, nor a strided slice)."""
    parts = []
    for comp in layout.components:
        plain = comp.fold > 1
        tail = None if plain or comp.kv_is_natural else _tail(comp.kv_index, layout.seq_len)
        parts.append(
            Part(
                comp.layout,
                fold=comp.fold,
                q_index=None if plain or comp.q_is_natural else comp.q_index,
                kv_index=None if plain or comp.kv_is_natural else comp.kv_index,
                q_slot=None if plain or comp.q_is_natural else comp.q_slot,
                kv_tail=tail,
            )
        )
    return tuple(parts)


def _on_mesh(fn, q: jax.Array):
    """fn(q, k, v) inside `jax.shard_map` over batch and heads when a mesh is set, else fn itself."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return fn
    batch_axes = _axes(mesh, BATCH_AXES, q.shape[0])
    head_axes = _axes(mesh, HEAD_AXES, q.shape[2])
    qkv = PartitionSpec(batch_axes or None, None, head_axes or None, None)
    return jax.shard_map(
        fn,
        mesh=mesh,
        in_specs=(qkv, qkv, qkv),
        out_specs=qkv,
        check_vma=False,  # pallas_call outputs carry no varying-axes annotation
    )


def pallas_attend(
    q: jax.Array, k: jax.Array, v: jax.Array, layout: PatternLayout, *, fused_backward: bool = False
) -> jax.Array:
    """All components of `layout` as one op (pallas_kernels.sparse_flash.merged_attention, which scales the
    scores): [B, L, H, D] in and out, inside `jax.shard_map` over batch and heads when a mesh is set."""
    if jax.default_backend() == "cpu":
        _say_interpret_once()
    attention = functools.partial(merged_attention, parts=_parts(layout), fused_backward=fused_backward)
    return _on_mesh(attention, q)(q, k, v)
