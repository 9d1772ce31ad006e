"""The jitted train and eval steps: masked next-token cross-entropy, mixup, accumulation, NaN guard.

The train state is a plain pytree (`TrainState`) of pure-dict parameters and optimizer state, so Orbax
saves it as is and `nnx.merge(graphdef, state.params)` gives the model back. Every array is placed by
the logical axis rules (`musenet_jax.model.sharding`); the steps are jitted with those shardings as
explicit input and output shardings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from musenet_jax.config import Config
from musenet_jax.model.sharding import state_shardings
from musenet_jax.model.transformer import MuseNet
from musenet_jax.train.optimizer import learning_rate_schedule, make_optimizer

Batch = Mapping[str, jax.Array]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    params: Any  # pure nested dict of the model's nnx.Param arrays
    opt_state: Any
    step: jax.Array  # int32: train steps taken (skipped ones included)
    rng: jax.Array  # uint32 key data, advanced every step (mixup draws)
    skipped: jax.Array  # int32: updates skipped for a non-finite loss or gradient, in total


def build_model(cfg: Config, vocab_size: int, seed: int = 0) -> MuseNet:
    return MuseNet(cfg.model, vocab_size, rngs=nnx.Rngs(seed), time_step_ms=cfg.encoding.time_step_ms)


def _fresh_state(cfg: Config, vocab_size: int) -> tuple[nnx.GraphDef, Callable[[], TrainState]]:
    tx = make_optimizer(cfg.train)
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: build_model(cfg, vocab_size)))

    def init() -> TrainState:
        params = nnx.to_pure_dict(nnx.state(build_model(cfg, vocab_size, cfg.train.seed), nnx.Param))
        rng = jax.random.key_data(jax.random.key(cfg.train.seed + 1))
        zero = jnp.zeros((), jnp.int32)
        return TrainState(params, tx.init(params), zero, rng, zero)

    return graphdef, init


def train_state_shardings(cfg: Config, vocab_size: int, mesh: Mesh) -> TrainState:
    """Where every array of the train state lives: params and their Adam moments by the rules, the rest replicated."""
    abstract_model = nnx.eval_shape(lambda: build_model(cfg, vocab_size))
    params = nnx.to_pure_dict(state_shardings(nnx.state(abstract_model, nnx.Param), mesh))
    replicated = NamedSharding(mesh, PartitionSpec())
    tx = make_optimizer(cfg.train)
    abstract_opt = jax.eval_shape(tx.init, jax.tree.map(lambda s: jax.ShapeDtypeStruct((), jnp.float32), params))
    opt = optax.tree_utils.tree_map_params(
        tx, lambda _, sharding: sharding, abstract_opt, params, transform_non_params=lambda _: replicated
    )
    return TrainState(params, opt, replicated, replicated, replicated)


def init_train_state(cfg: Config, vocab_size: int, mesh: Mesh) -> tuple[nnx.GraphDef, TrainState]:
    """A fresh, sharded train state (parameters initialized directly on their devices)."""
    graphdef, init = _fresh_state(cfg, vocab_size)
    return graphdef, jax.jit(init, out_shardings=train_state_shardings(cfg, vocab_size, mesh))()


def abstract_train_state(cfg: Config, vocab_size: int, mesh: Mesh) -> tuple[nnx.GraphDef, TrainState]:
    """Shapes, dtypes and shardings of the train state without allocating it (to restore into)."""
    graphdef, init = _fresh_state(cfg, vocab_size)
    shapes = jax.eval_shape(init)
    shardings = train_state_shardings(cfg, vocab_size, mesh)
    return graphdef, jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batch rows split over the data and fsdp axes (the rules' `batch`)."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def check_batch_split(cfg: Config, mesh: Mesh) -> None:
    """Each of the `grad_accum_steps` microbatches must split evenly over the batch axes of the mesh."""
    rows, accum, batch = mesh.shape["data"] * mesh.shape["fsdp"], cfg.train.grad_accum_steps, cfg.train.global_batch
    if accum < 1 or batch % (accum * rows):
        from musenet_jax.errors import UserError

        raise UserError(f"train.global_batch={batch} must split into train.grad_accum_steps={accum} microbatches "
                        f"that divide evenly over data x fsdp = {rows} devices")


def abstract_batch(cfg: Config, mesh: Mesh) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes, dtypes and shardings of a global batch (`data/pipeline.py`'s layout), to lower against."""
    rows, shape = batch_sharding(mesh), (cfg.train.global_batch, cfg.model.context)
    spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=rows)  # noqa: E731
    return {
        "inputs": spec(shape, jnp.int32),
        "targets": spec(shape, jnp.int32),
        "loss_mask": spec(shape, jnp.float32),
        "times": spec(shape, jnp.int32),
        "durations": spec(shape[:1], jnp.int32),
    }


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Negative log-likelihood of each target token, in nats, computed in float32."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def mixup_draw(key: jax.Array, batch_size: int, alpha: float, groups: int) -> tuple[jax.Array, jax.Array]:
    """A partner for every sequence, drawn among the `batch_size / groups` consecutive rows of its group
    (the rows one device holds, so partners' targets never cross devices), and lambda ~ Beta(alpha, alpha)."""
    perm_key, lam_key = jax.random.split(key)
    block = batch_size // groups
    local = jax.random.permutation(perm_key, jnp.broadcast_to(jnp.arange(block), (groups, block)), axis=1,
                                   independent=True)
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
        nll = token_nll(model(inputs, batch["times"], batch["durations"]), targets)
        return jnp.sum(nll * mask), jnp.sum(mask)
    perm, lam = mixup_draw(key, inputs.shape[0], mixup_alpha, groups)
    logits = model(inputs, batch["times"], batch["durations"], mix=(perm, lam))
    lam = lam[:, None]
    partner_mask = partner_rows(mask, perm, groups)
    partner_nll = token_nll(logits, partner_rows(targets, perm, groups))
    weight = lam * mask + (1 - lam) * partner_mask
    nll = lam * mask * token_nll(logits, targets) + (1 - lam) * partner_mask * partner_nll
    return jnp.sum(nll), jnp.sum(weight)


def mixup_groups(cfg: Config, mesh: Mesh) -> int:
    """Mixup partners come from the same device's rows (no batch-wide gather on a pod), as long as a
    device holds at least 2 rows of a microbatch; otherwise from the whole microbatch."""
    rows = mesh.shape["data"] * mesh.shape["fsdp"]
    micro = cfg.train.global_batch // cfg.train.grad_accum_steps
    return rows if micro // rows >= 2 else 1


def _gradients(cfg: Config, graphdef: nnx.GraphDef, params: Any, batch: Batch, key: jax.Array, groups: int):
    """Gradient of the mean token loss over the whole batch, accumulated over `grad_accum_steps` slices.
    Microbatch i takes rows i, i + accum, ...: each device keeps its own rows, so slicing moves no data."""
    accum = cfg.train.grad_accum_steps

    def sums(p: Any, micro: Batch, k: jax.Array) -> tuple[jax.Array, jax.Array]:
        return summed_loss(nnx.merge(graphdef, p), micro, k, cfg.train.mixup_alpha, groups)

    grad_fn = jax.value_and_grad(sums, has_aux=True)
    if accum == 1:
        (nll, weight), grads = grad_fn(params, batch, key)
    else:
        micro = jax.tree.map(lambda x: jnp.swapaxes(x.reshape(x.shape[0] // accum, accum, *x.shape[1:]), 0, 1),
                             dict(batch))

        def body(carry, xs):
            micro_batch, k = xs
            (n, w), g = grad_fn(params, micro_batch, k)
            return jax.tree.map(jnp.add, carry, ((n, w), g)), None

        zero = ((jnp.zeros(()), jnp.zeros(())), jax.tree.map(jnp.zeros_like, params))
        ((nll, weight), grads), _ = jax.lax.scan(body, zero, (micro, jax.random.split(key, accum)))
    weight = jnp.maximum(weight, 1.0)
    return nll / weight, jax.tree.map(lambda g: g / weight, grads)


def make_train_step(cfg: Config, graphdef: nnx.GraphDef, mesh: Mesh) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """fn(state, batch) -> (state, metrics); a non-finite loss or gradient leaves params and optimizer untouched."""
    return _under_mesh(jit_train_step(cfg, graphdef, mesh), mesh)


def jit_train_step(cfg: Config, graphdef: nnx.GraphDef, mesh: Mesh) -> Any:
    """The `jax.jit` object behind `make_train_step`, for ahead-of-time `.lower(...)`; trace it inside
    `jax.set_mesh(mesh)` so the model's activation constraints apply. The state argument is donated."""
    from musenet_jax.encoding.vocab import Vocabulary

    check_batch_split(cfg, mesh)
    groups = mixup_groups(cfg, mesh)
    tx = make_optimizer(cfg.train)
    schedule = learning_rate_schedule(cfg.train)
    shardings = train_state_shardings(cfg, Vocabulary(cfg.encoding).size, mesh)
    replicated = NamedSharding(mesh, PartitionSpec())

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        key, next_key = jax.random.split(jax.random.wrap_key_data(state.rng))
        loss, grads = _gradients(cfg, graphdef, state.params, batch, key, groups)
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

    return jax.jit(step, in_shardings=(shardings, batch_sharding(mesh)),
                   out_shardings=(shardings, replicated), donate_argnums=0)


def make_eval_step(cfg: Config, graphdef: nnx.GraphDef, mesh: Mesh) -> Callable[[TrainState, Batch], tuple[jax.Array, jax.Array]]:
    """fn(state, batch) -> (sum of token NLL in nats, token count) over the batch's unmasked targets."""
    from musenet_jax.encoding.vocab import Vocabulary

    shardings = train_state_shardings(cfg, Vocabulary(cfg.encoding).size, mesh)
    replicated = NamedSharding(mesh, PartitionSpec())

    def step(state: TrainState, batch: Batch) -> tuple[jax.Array, jax.Array]:
        return summed_loss(nnx.merge(graphdef, state.params), batch, jax.random.key(0), 0.0)

    jitted = jax.jit(step, in_shardings=(shardings, batch_sharding(mesh)), out_shardings=(replicated, replicated))
    return _under_mesh(jitted, mesh)


def _under_mesh(fn: Callable, mesh: Mesh) -> Callable:
    """Calls `fn` with `mesh` set, so the model's activation sharding constraints apply when it is traced."""

    def call(*args):
        with jax.set_mesh(mesh):
            return fn(*args)

    return call
