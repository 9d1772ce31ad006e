"""The jitted train and eval steps on the tiny model: learning, exact gradient accumulation, mixup,
the non-finite guard, and a (data, fsdp, tensor) mesh of 8 fake devices matching one device."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from musenet_jax.config import load_config
from musenet_jax.encoding.slots import note_slots
from musenet_jax.encoding.vocab import Vocabulary
from musenet_jax.model.config import MeshConfig
from musenet_jax.model.sharding import make_mesh
from musenet_jax.train.optimizer import learning_rate_schedule
from musenet_jax.train.setup import make_train_setup
from musenet_jax.train.step import make_eval_step, make_train_step, mixup_draw, mixup_groups, partner_rows

CFG = load_config(
    "tiny",
    ["model.context=64", "train.learning_rate=3e-3", "train.warmup_steps=1", "train.steps=20", "mesh.data=1"],
)
VOCAB = Vocabulary(CFG.encoding).size


def with_train(**changes):
    return CFG.replace(train=dataclasses.replace(CFG.train, **changes))


def make_batch(identical_rows: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """4 sequences; the first two end early (padding), so a per-microbatch mean would be wrong."""
    rng = np.random.default_rng(seed)
    b, t = CFG.train.global_batch, CFG.model.context
    tokens = rng.integers(1, VOCAB, (1 if identical_rows else b, t + 1)).repeat(
        b if identical_rows else 1, axis=0
    )
    mask = np.ones((b, t), np.float32)
    if not identical_rows:
        mask[0, 10:] = 0
        mask[1, 40:] = 0
    waits = rng.integers(0, 20, (1, t)).repeat(b, axis=0)
    return {
        "inputs": tokens[:, :-1].astype(np.int32),
        "targets": tokens[:, 1:].astype(np.int32),
        "loss_mask": mask,
        "times": np.cumsum(waits, axis=1).astype(np.int32),
        "durations": np.full((b,), 2000, np.int32),
        "sounding_head": np.zeros((b, note_slots(Vocabulary(CFG.encoding)).count), np.int32),
    }


@pytest.fixture(scope="module")
def one_device():
    """Mesh of one device, the initial state on the host (steps donate their input state) and a step."""
    mesh = make_mesh(CFG.mesh, jax.devices()[:1])
    setup = make_train_setup(CFG, mesh)
    return mesh, setup.graphdef, jax.device_get(setup.init_state()), make_train_step(setup)


def on(mesh, host_state, cfg=CFG):
    return jax.device_put(host_state, make_train_setup(cfg, mesh).state_shardings)


def put(mesh, batch):
    return jax.device_put(batch, make_train_setup(CFG, mesh).batch_sharding)


def reference_loss(graphdef, params, batch) -> float:
    """Masked mean next-token NLL computed straight from the model, outside the train step."""
    logits = nnx.merge(graphdef, params)(batch["inputs"], batch["times"], batch["durations"])
    logp = jax.nn.log_softmax(logits, -1)
    nll = -jnp.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
    return float(jnp.sum(nll * batch["loss_mask"]) / jnp.sum(batch["loss_mask"]))


def test_loss_decreases_on_a_fixed_batch_and_learning_rate_follows_the_schedule(one_device):
    mesh, graphdef, host, step = one_device
    state, batch = on(mesh, host), put(mesh, make_batch())
    schedule = learning_rate_schedule(CFG.train)
    losses = []
    for i in range(8):
        state, metrics = step(state, batch)
        metrics = jax.device_get(metrics)
        losses.append(float(metrics["loss"]))
        assert metrics["learning_rate"] == pytest.approx(float(schedule(i)))
        assert metrics["skipped"] == 0 and np.isfinite(metrics["grad_norm"])
    assert losses[0] == pytest.approx(reference_loss(graphdef, host.params, make_batch()), rel=1e-5)
    assert losses[-1] < losses[0] - 1.0, losses
    assert int(state.step) == 8 and int(state.skipped) == 0


def test_two_microbatches_give_the_whole_batch_update(one_device):
    mesh, graphdef, host, step = one_device
    whole, whole_metrics = step(on(mesh, host), put(mesh, make_batch()))
    cfg = with_train(grad_accum_steps=2)
    accumulated, accum_metrics = make_train_step(make_train_setup(cfg, mesh))(
        on(mesh, host, cfg), put(mesh, make_batch())
    )
    assert float(accum_metrics["loss"]) == pytest.approx(float(whole_metrics["loss"]), rel=1e-5)
    assert float(accum_metrics["grad_norm"]) == pytest.approx(float(whole_metrics["grad_norm"]), rel=1e-4)
    for a, b in zip(jax.tree.leaves(accumulated.params), jax.tree.leaves(whole.params)):
        np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-5)


def test_mixup_off_at_alpha_0_and_mixes_losses_with_the_embeddings_lambda(one_device):
    mesh, graphdef, host, step = one_device
    mixup = make_train_step(make_train_setup(with_train(mixup_alpha=0.4), mesh))
    plain = float(step(on(mesh, host), put(mesh, make_batch()))[1]["loss"])
    mixed = float(mixup(on(mesh, host), put(mesh, make_batch()))[1]["loss"])
    assert np.isfinite(mixed) and abs(mixed - plain) > 1e-3
    # Mixing a sequence with itself changes nothing: embeddings and both loss terms are the same.
    same = make_batch(identical_rows=True)
    plain_same = float(step(on(mesh, host), put(mesh, same))[1]["loss"])
    mixed_same = float(mixup(on(mesh, host), put(mesh, same))[1]["loss"])
    assert mixed_same == pytest.approx(plain_same, rel=1e-5)


def test_mixup_partners_stay_within_a_devices_rows():
    perm, lam = mixup_draw(jax.random.key(3), 12, 0.4, groups=4)
    perm = np.asarray(perm)
    assert sorted(perm) == list(range(12)) and np.all(perm // 3 == np.arange(12) // 3)
    assert np.all((0 <= lam) & (lam <= 1))
    x = np.arange(12 * 5).reshape(12, 5)
    np.testing.assert_array_equal(partner_rows(jnp.asarray(x), jnp.asarray(perm), 4), x[perm])
    mesh8 = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    assert mixup_groups(with_train(global_batch=16, grad_accum_steps=2).train, mesh8) == 4
    assert mixup_groups(with_train(global_batch=4).train, mesh8) == 1  # one row per device: any partner


def test_a_non_finite_loss_skips_the_update_and_is_counted(one_device):
    mesh, graphdef, host, step = one_device
    poisoned = dataclasses.replace(host, params=jax.tree.map(np.copy, host.params))
    poisoned.params["head"]["bias"][0] = np.nan
    state, metrics = step(on(mesh, poisoned), put(mesh, make_batch()))
    assert not np.isfinite(float(metrics["loss"])) and int(metrics["skipped"]) == 1
    assert int(state.step) == 1 and int(state.skipped) == 1
    after = jax.device_get(state)
    for new, old in zip(
        jax.tree.leaves((after.params, after.opt_state)), jax.tree.leaves((poisoned.params, host.opt_state))
    ):
        np.testing.assert_array_equal(
            new, old
        )  # NaN == NaN here: the poisoned entry stays, nothing else moves


def test_eval_step_sums_nll_in_nats_over_unmasked_tokens(one_device):
    mesh, graphdef, host, _ = one_device
    nll, count = make_eval_step(make_train_setup(CFG, mesh))(on(mesh, host), put(mesh, make_batch()))
    batch = make_batch()
    assert float(count) == batch["loss_mask"].sum()
    assert float(nll) / float(count) == pytest.approx(reference_loss(graphdef, host.params, batch), rel=1e-5)


def test_eight_devices_with_fsdp_and_tensor_sharding_give_the_single_device_step(one_device):
    mesh, graphdef, host, step = one_device
    single, single_metrics = step(on(mesh, host), put(mesh, make_batch()))
    cfg = CFG.replace(mesh=MeshConfig(data=1, fsdp=4, tensor=2))
    mesh8 = make_mesh(cfg.mesh)
    state8 = on(mesh8, host, cfg)
    query = state8.params["layers"]["blocks"][0]["attn"]["query"]["kernel"]
    assert len(query.sharding.device_set) == 8 and query.sharding.spec[1:3] == ("fsdp", "tensor")
    sharded, metrics = make_train_step(make_train_setup(cfg, mesh8))(state8, put(mesh8, make_batch()))
    assert float(metrics["loss"]) == pytest.approx(float(single_metrics["loss"]), rel=1e-5)
    assert float(metrics["grad_norm"]) == pytest.approx(float(single_metrics["grad_norm"]), rel=1e-4)
    for a, b in zip(jax.tree.leaves(sharded.params), jax.tree.leaves(single.params)):
        np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-5)
