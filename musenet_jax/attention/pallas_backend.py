"""The `pallas` backend's component function: the kernels of `pallas_kernels.sparse_flash`, placed on the
mesh. Mosaic and Triton kernels are not auto-partitioned, so on a mesh each device runs them on its own
shard inside `jax.shard_map`, split over batch and heads exactly as the model shards q, k and v (the
kernel package itself knows no mesh)."""

from __future__ import annotations

import functools
import logging
import math

import jax
from jax.sharding import PartitionSpec

from pallas_kernels.block_layout import BlockLayout
from pallas_kernels.sparse_flash import sparse_flash_attention

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


def pallas_component(
    q: jax.Array, k: jax.Array, v: jax.Array, layout: BlockLayout, *, fused_backward: bool = False
) -> tuple[jax.Array, jax.Array]:
    """The component function for `backends.sparse_attend`: the kernel, inside `jax.shard_map` over batch
    and heads when a mesh is set."""
    if jax.default_backend() == "cpu":
        _say_interpret_once()
    attention = functools.partial(sparse_flash_attention, layout=layout, fused_backward=fused_backward)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return attention(q, k, v)
    batch_axes = _axes(mesh, BATCH_AXES, q.shape[0])
    head_axes = _axes(mesh, HEAD_AXES, q.shape[2])
    qkv = PartitionSpec(batch_axes or None, None, head_axes or None, None)
    stat = PartitionSpec(batch_axes or None, None, head_axes or None)
    sharded = jax.shard_map(
        attention,
        mesh=mesh,
        in_specs=(qkv, qkv, qkv),
        out_specs=(qkv, stat),
        check_vma=False,  # pallas_call outputs carry no varying-axes annotation
    )
    return sharded(q, k, v)
