"""Rematerialization keeps the attention kernels' results: a 2-layer `musenet_72l`-shaped model's gradient,
lowered for TPU, holds exactly one forward kernel call per attention component (the backward reads the
saved output and log-sum-exp instead of running the forward kernel again), under every remat policy."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, Mesh

from musenet_jax.attention.backends import backend_layout
from musenet_jax.config import load_config
from musenet_jax.encoding.vocab import Vocabulary
from musenet_jax.model.transformer import build_model, pattern_cycle

KERNELS = ("sparse_flash_fwd", "sparse_flash_dq", "sparse_flash_dkv")


def _lowered_gradient(policy: str) -> tuple[str, str, int]:
    """(jaxpr text, StableHLO text for TPU, attention components per layer group) of d(loss)/d(params)."""
    overrides = ["model.n_layers=2", "model.context=256", "model.d_model=128", "model.n_heads=2"]
    cfg = load_config("musenet_72l", [*overrides, f"model.remat_policy={policy}"])
    assert cfg.model.attention == "pallas" and cfg.model.scan_layers
    graphdef, params = nnx.split(nnx.eval_shape(lambda: build_model(cfg.model, Vocabulary(cfg.encoding))))
    components = sum(
        len(backend_layout(p, 256, backend="pallas", block_size=cfg.model.block_size).components)
        for patterns in pattern_cycle(cfg.model)
        for p in patterns
    )

    def loss(params, inputs, times, durations):
        return nnx.merge(graphdef, params)(inputs, times, durations).mean()

    tokens = jax.ShapeDtypeStruct((1, 256), jnp.int32)
    mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
    mesh = Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * 3)
    with jax.set_mesh(mesh):  # as in training: the kernels run inside shard_map
        traced = jax.jit(jax.grad(loss)).trace(params, tokens, tokens, jax.ShapeDtypeStruct((1,), jnp.int32))
        text = traced.lower(lowering_platforms=("tpu",)).as_text()
    return str(traced.jaxpr), text, components


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["full", "dots_saveable", "none"])
def test_backward_never_reruns_the_forward_kernel(policy):
    jaxpr, text, components = _lowered_gradient(policy)
    assert "shard_map" in jaxpr and ("remat" in jaxpr) == (policy != "none")
    counts = {name: len(re.findall(rf"\b{name}\b", text)) for name in KERNELS}
    # strided and fixed, two components each; the layer group is scanned, so its body appears once
    assert components == 4
    assert counts == {name: components for name in KERNELS}, counts
