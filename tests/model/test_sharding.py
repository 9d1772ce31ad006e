"""Sharding: parameters carry the rules' shardings, and a (data, fsdp, tensor) mesh of 8 fake CPU
devices gives the single-device loss, gradients and KV-cache decoding logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from model_inputs import VOCAB, batch, tiny_model_config

from musenet_jax.errors import UserError
from musenet_jax.model.config import MeshConfig
from musenet_jax.model.sharding import cache_shardings, logical_to_spec, make_mesh, model_shardings
from musenet_jax.model.transformer import MuseNet

MESH_CFG = MeshConfig(data=2, fsdp=2, tensor=2)


def _loss(model, b):
    logits = model(b["inputs"], b["times"], b["durations"])
    targets = jnp.roll(b["inputs"], -1, axis=1)
    picked = jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
    return jnp.mean(jax.nn.logsumexp(logits, -1) - picked)


def test_rules_map_logical_names_to_mesh_axes():
    mesh = make_mesh(MESH_CFG)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    # A mesh axis is used once per array: activations shard batch over data+fsdp and keep embed whole.
    assert logical_to_spec(("batch", "length", "embed")) == PartitionSpec(("data", "fsdp"), None, None)
    assert logical_to_spec(("embed", "mlp")) == PartitionSpec("fsdp", "tensor")
    # An axis that does not divide the dimension is dropped (odd vocabulary).
    assert logical_to_spec(("vocab", "embed"), (301, 64), mesh) == PartitionSpec(None, "fsdp")
    assert make_mesh(MeshConfig(data=-1, fsdp=4)).shape["data"] == 2
    with pytest.raises(UserError, match="needs 12 devices"):
        make_mesh(MeshConfig(data=3, fsdp=2, tensor=2))


def test_sharded_model_gives_single_device_loss_and_gradients():
    cfg = tiny_model_config()
    mesh = make_mesh(MESH_CFG)
    b = batch(batch_size=4, length=cfg.context)
    grad_fn = nnx.jit(nnx.value_and_grad(_loss))

    single = MuseNet(cfg, VOCAB, rngs=nnx.Rngs(0))
    loss_1, grads_1 = grad_fn(single, b)

    model = MuseNet(cfg, VOCAB, rngs=nnx.Rngs(0))
    nnx.update(model, jax.device_put(nnx.state(model), model_shardings(model, mesh)))
    rows = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    sharded_batch = jax.device_put(b, rows)

    params = nnx.state(model)
    assert params["head"]["kernel"].get_value().sharding.spec == PartitionSpec("fsdp", "tensor")
    assert params["embed"]["token"]["embedding"].get_value().sharding.spec == PartitionSpec("tensor", "fsdp")
    query = params["layers"]["blocks"][0]["attn"]["query"]["kernel"].get_value()
    assert query.sharding.spec == PartitionSpec(None, "fsdp", "tensor", None)  # [layers, embed, heads, kv]
    assert len(query.sharding.device_set) == 8
    up = params["layers"]["blocks"][1]["mlp"]["up"]["kernel"].get_value()
    assert up.sharding.spec == PartitionSpec(None, "fsdp", "tensor")

    with jax.set_mesh(mesh):
        assert (
            "sharding_constraint" in nnx.jit(_loss).lower(model, sharded_batch).as_text()
        )  # activations are pinned
        loss_8, grads_8 = grad_fn(model, sharded_batch)
    np.testing.assert_allclose(loss_8, loss_1, rtol=1e-5)
    for g8, g1 in zip(jax.tree.leaves(grads_8), jax.tree.leaves(grads_1)):
        np.testing.assert_allclose(g8, g1, rtol=1e-3, atol=1e-6)

    # Sampling on the mesh: a sharded cache, decoded token by token, gives the single-device logits.
    full_1 = nnx.jit(lambda m, b: m(b["inputs"], b["times"], b["durations"]))(single, b)
    cache = model.init_cache(4, 8)
    kv_sharding = NamedSharding(mesh, PartitionSpec(None, None, ("data", "fsdp"), None, "tensor", None))
    assert cache_shardings(cache, mesh).k == kv_sharding
    cache = jax.device_put(cache, cache_shardings(cache, mesh))
    step = nnx.jit(lambda m, tok, t, d, c: m.decode_step(tok, t, d, c))
    with jax.set_mesh(mesh):
        for pos in range(3):
            logits, cache = step(
                model,
                sharded_batch["inputs"][:, pos],
                sharded_batch["times"][:, pos],
                sharded_batch["durations"],
                cache,
            )
            np.testing.assert_allclose(logits, full_1[:, pos], rtol=1e-4, atol=2e-5)
    assert cache.k.sharding.is_equivalent_to(kv_sharding, cache.k.ndim)  # stays put from step to step
