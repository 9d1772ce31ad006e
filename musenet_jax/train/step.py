"""The jitted train and eval steps: masked next-token cross-entropy, mixup, accumulation, NaN guard.

Both are jitted with the shardings of the run's `TrainSetup` as explicit input and output shardings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from musenet_jax.model.loss import token_nll
from musenet_jax.model.sharding import batch_devices
from musenet_jax.model.transformer import MuseNet
from musenet_jax.train.config import TrainConfig
from musenet_jax.train.setup import TrainSetup, TrainState

Batch = Mapping[str, jax.Array]


def mixup_draw(key: jax.Array, batch_size: int, alpha: float, groups: int) -> tuple[jax.Array, jax.Array]:
    """A partner for every sequence, drawn among the `batch_size / groups` consecutive rows of its group
    (the rows one device holds, so partners' targets never cross devices), and lambda ~ Beta(alpha, alpha)."""
    perm_key, lam_key = jax.random.split(key)
    block = batch_size // groups
    local = jax.random.permutation(
        perm_key, jnp.broadcast_to(jnp.arange(block), (groups, block)), axis=1, independent=True
    )
    perm = (local + block * jnp.arange(groups)[:, None]).reshape(batch_size)
    lam = jax.random.beta(lam_key, alpha, alpha, (batch_size,))
    return perm, lam


def partner_rows(x: jax.Array, perm: jax.Array, groups: int) -> jax.Array:
    """x[perm] for a group-local `perm`, written as a gather inside each group so that it stays local."""
    grouped = x.reshape(groups, -1, *x.shape[1:])
    local = (perm % grouped.shape[1]).reshape(groups, -1, *(1,) * (x.ndim - 1))
    return jnp.take_along_axis(grouped, local, axis=1).reshape(x.shape)


def summed_loss(
    model: MuseNet, batch: Batch, key: jax.Array, mixup_alpha: float, groups: int = 1
) -> tuple[jax.Array, jax.Array]:
    """(sum of token NLL, token weight). With mixup, each sequence's embeddings are mixed with a partner's
    and its loss mixes both targets with the same lambda (MuseNet's embedding-space mixup); partners are
    drawn within `groups` equal blocks of consecutive rows (see `mixup_groups`)."""
    inputs, targets, mask = batch["inputs"], batch["targets"], batch["loss_mask"].astype(jnp.float32)
    if mixup_alpha <= 0:
        logits = model(inputs, batch["times"], batch["durations"], sounding_head=batch["sounding_head"])
        nll = token_nll(logits, targets)
        return jnp.sum(nll * mask), jnp.sum(mask)
    perm, lam = mixup_draw(key, inputs.shape[0], mixup_alpha, groups)
    logits = model(inputs, batch["times"], batch["durations"], mix=(perm, lam))
    lam = lam[:, None]
    partner_mask = partner_rows(mask, perm, groups)
    partner_nll = token_nll(logits, partner_rows(targets, perm, groups))
    weight = lam * mask + (1 - lam) * partner_mask
    nll = lam * mask * token_nll(logits, targets) + (1 - lam) * partner_mask * partner_nll
    return jnp.sum(nll), jnp.sum(weight)


def mixup_groups(train: TrainConfig, mesh: Mesh) -> int:
    """Mixup partners come from the same device's rows (no batch-wide gather on a pod), as long as a
    device holds at least 2 rows of a microbatch; otherwise from the whole microbatch."""
    rows = batch_devices(mesh)
    micro = train.global_batch // train.grad_accum_steps
    return rows if micro // rows >= 2 else 1


def _gradients(
    train: TrainConfig, graphdef: nnx.GraphDef, params: Any, batch: Batch, key: jax.Array, groups: int
):
    """Gradient of the mean token loss over the whole batch, accumulated over `grad_accum_steps` slices.
    Microbatch i takes rows i, i + accum, ...: each device keeps its own rows, so slicing moves no data."""
    accum = train.grad_accum_steps

    def sums(p: Any, micro: Batch, k: jax.Array) -> tuple[jax.Array, jax.Array]:
        return summed_loss(nnx.merge(graphdef, p), micro, k, train.mixup_alpha, groups)

    grad_fn = jax.value_and_grad(sums, has_aux=True)
    if accum == 1:
        (nll, weight), grads = grad_fn(params, batch, key)
    else:
        micro = jax.tree.map(
            lambda x: jnp.swapaxes(x.reshape(x.shape[0] // accum, accum, *x.shape[1:]), 0, 1), dict(batch)
        )

        def body(carry, xs):
            micro_batch, k = xs
            (n, w), g = grad_fn(params, micro_batch, k)
            return jax.tree.map(jnp.add, carry, ((n, w), g)), None

        zero = ((jnp.zeros(()), jnp.zeros(())), jax.tree.map(jnp.zeros_like, params))
        ((nll, weight), grads), _ = jax.lax.scan(body, zero, (micro, jax.random.split(key, accum)))
    weight = jnp.maximum(weight, 1.0)
    return nll / weight, jax.tree.map(lambda g: g / weight, grads)


def make_train_step(setup: TrainSetup) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """fn(state, batch) -> (state, metrics); a non-finite loss or gradient leaves params and optimizer
    untouched."""
    return _under_mesh(jit_train_step(setup), setup.mesh)


def jit_train_step(setup: TrainSetup) -> Any:
    """The `jax.jit` object behind `make_train_step`, for ahead-of-time `.lower(...)`; trace it inside
    `jax.set_mesh(mesh)` so the model's activation constraints apply. The state argument is donated."""
    train, graphdef, tx, schedule = setup.cfg.train, setup.graphdef, setup.optimizer, setup.schedule
    groups = mixup_groups(train, setup.mesh)

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        key, next_key = jax.random.split(jax.random.wrap_key_data(state.rng))
        loss, grads = _gradients(train, graphdef, state.params, batch, key, groups)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, new_opt = tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
        new_state = TrainState(
            params=keep(new_params, state.params),
            opt_state=keep(new_opt, state.opt_state),
            step=state.step + 1,
            rng=jax.random.key_data(next_key),
            skipped=state.skipped + (~finite).astype(jnp.int32),
        )
        metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "learning_rate": schedule(state.step - state.skipped),  # the schedule counts applied updates
            "skipped": (~finite).astype(jnp.int32),
        }
        return new_state, metrics

    shardings, replicated = setup.state_shardings, setup.replicated
    return jax.jit(
        step,
        in_shardings=(shardings, setup.batch_sharding),
        out_shardings=(shardings, replicated),
        donate_argnums=0,
    )


def make_eval_step(setup: TrainSetup) -> Callable[[TrainState, Batch], tuple[jax.Array, jax.Array]]:
    """fn(state, batch) -> (sum of token NLL in nats, token count) over the batch's unmasked targets."""

    def step(state: TrainState, batch: Batch) -> tuple[jax.Array, jax.Array]:
        return summed_loss(nnx.merge(setup.graphdef, state.params), batch, jax.random.key(0), 0.0)

    replicated = setup.replicated
    jitted = jax.jit(
        step,
        in_shardings=(setup.state_shardings, setup.batch_sharding),
        out_shardings=(replicated, replicated),
    )
    return _under_mesh(jitted, setup.mesh)


def _under_mesh(fn: Callable, mesh: Mesh) -> Callable:
    """Calls `fn` with `mesh` set, so the model's activation sharding constraints apply when it is traced."""

    def call(*args):
        with jax.set_mesh(mesh):
            return fn(*args)

    return call
