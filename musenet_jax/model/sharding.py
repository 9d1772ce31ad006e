"""Logical axis names -> mesh axes: one rules table for parameters and activations, the mesh, and
the NamedShardings of a model's state and of its KV cache.

Every parameter is created with logical axis names (`logical_init`); activations are pinned with
`constrain`. `LOGICAL_AXIS_RULES` maps each logical name to mesh axes. As in Flax's logical
partitioning, a mesh axis is used at most once per array (the first dimension that claims it wins),
so activation [batch, length, embed] shards batch over (data, fsdp) and leaves embed whole, while a
parameter [embed, mlp] shards embed over fsdp (ZeRO-3 style) and mlp over tensor. A dimension that a
mesh axis does not divide stays unsharded (e.g. an odd vocabulary).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from musenet_jax.errors import UserError
from musenet_jax.model.cache import CACHE_AXES, KVCache
from musenet_jax.model.config import MeshConfig

MESH_AXES: tuple[str, ...] = ("data", "fsdp", "tensor")

LOGICAL_AXIS_RULES: dict[str, tuple[str, ...]] = {
    "batch": ("data", "fsdp"),
    "length": (),
    "embed": ("fsdp",),
    "heads": ("tensor",),
    "kv": (),
    "mlp": ("tensor",),
    "vocab": ("tensor",),
    "layers": (),
}

Logical = Sequence[str | None]


def logical_init(init: Callable[..., Any], names: Logical) -> Callable[..., Any]:
    """`init` whose parameter carries logical axis `names` (sharded later by the rules, not eagerly)."""
    return nnx.with_partitioning(init, tuple(names), eager_sharding=False)


def logical_to_spec(
    names: Logical, shape: Sequence[int] | None = None, mesh: Mesh | None = None
) -> PartitionSpec:
    """PartitionSpec for logical `names`; with `shape` and `mesh`, axes that do not divide a dimension
    are dropped."""
    used: set[str] = set()
    spec: list[Any] = []
    for dim, name in enumerate(names):
        axes = []
        for axis in LOGICAL_AXIS_RULES.get(name, ()) if name else ():
            if axis in used or (mesh is not None and axis not in mesh.shape):
                continue
            if shape is not None and mesh is not None:
                if shape[dim] % (math.prod(mesh.shape[a] for a in axes) * mesh.shape[axis]):
                    continue
            axes.append(axis)
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    return PartitionSpec(*spec)


def batch_axes() -> tuple[str, ...]:
    """The mesh axes a batch's rows are split over (data x fsdp): the rules' `batch`."""
    return LOGICAL_AXIS_RULES["batch"]


def batch_devices(mesh: Mesh) -> int:
    """How many ways a batch's rows are split on `mesh`."""
    return math.prod(mesh.shape[axis] for axis in batch_axes())


def constrain(x: jax.Array, names: Logical) -> jax.Array:
    """Pin an activation's sharding by logical names when a mesh is set (`jax.set_mesh`); else a no-op."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(names, x.shape, mesh))


def make_mesh(mesh_cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """(data, fsdp, tensor) mesh over `devices` (default: all); one size may be -1 = whatever is left."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = [mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise UserError(
            f"mesh sizes (data, fsdp, tensor) = {tuple(sizes)}: each must be >= 1, at most one -1"
        )
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise UserError(f"{len(devices)} devices cannot fill a mesh with fixed axes of product {known}")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise UserError(
            f"mesh (data={sizes[0]}, fsdp={sizes[1]}, tensor={sizes[2]}) needs {math.prod(sizes)} devices, "
            f"have {len(devices)}"
        )
    grid = np.asarray(devices, dtype=object).reshape(sizes)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def _variable_names(variable: nnx.Variable) -> tuple[str | None, ...]:
    names = variable.get_metadata().get("out_sharding") or ()
    return tuple(names) + (None,) * (variable.get_value().ndim - len(names))


def state_shardings(state: Any, mesh: Mesh) -> Any:
    """NamedShardings for an `nnx.State` (or abstract state) of a model built here, by the rules."""

    def sharding(variable: Any) -> Any:
        if not isinstance(variable, nnx.Variable):
            return NamedSharding(mesh, PartitionSpec())
        spec = logical_to_spec(_variable_names(variable), variable.get_value().shape, mesh)
        return variable.replace(NamedSharding(mesh, spec))

    return jax.tree.map(sharding, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def model_shardings(model: nnx.Module, mesh: Mesh) -> Any:
    """NamedShardings of `nnx.state(model)` (same tree structure)."""
    return state_shardings(nnx.state(model), mesh)


def cache_shardings(cache: KVCache, mesh: Mesh) -> KVCache:
    """NamedShardings of a KV cache (same tree): sequences over data+fsdp, heads over tensor, like
    the activations that fill it, so sampling on a mesh moves no cache between devices."""
    kv = NamedSharding(mesh, logical_to_spec(CACHE_AXES, cache.k.shape, mesh))
    sounding = NamedSharding(mesh, logical_to_spec(("batch", None), cache.held.shape, mesh))
    return KVCache(kv, kv, NamedSharding(mesh, PartitionSpec()), sounding)
