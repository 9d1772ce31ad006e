"""Everything a run's train state is made of, built once: model graph, optimizer, schedule, mesh,
tokenizer (and its vocabulary), and where every array lives. The train step, the eval step, restore and the
ahead-of-time compile all read it from here instead of rebuilding it from the config.

The train state is a plain pytree (`TrainState`) of pure-dict parameters and optimizer state, so Orbax
saves it as is and `nnx.merge(setup.graphdef, state.params)` gives the model back. Every array is placed
by the logical axis rules (`musenet_jax.model.sharding`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from optax.transforms import MaskedNode

from musenet_jax.config import Config
from musenet_jax.encoding.slots import note_slots
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.errors import UserError
from musenet_jax.model.sharding import batch_axes, batch_devices
from musenet_jax.model.transformer import abstract_params, build_model
from musenet_jax.train.optimizer import learning_rate_schedule, make_optimizer


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    params: Any  # pure nested dict of the model's nnx.Param arrays
    opt_state: Any
    step: jax.Array  # int32: train steps taken (skipped ones included)
    rng: jax.Array  # uint32 key data, advanced every step (mixup draws)
    skipped: jax.Array  # int32: updates skipped for a non-finite loss or gradient, in total


@dataclasses.dataclass(frozen=True, eq=False)
class TrainSetup:
    """One run's training pieces on one mesh (see the module docstring)."""

    cfg: Config
    mesh: Mesh
    tokenizer: Tokenizer  # the run's encoding, built once for the loop, its data and its checkpoints
    graphdef: nnx.GraphDef
    optimizer: optax.GradientTransformation
    schedule: optax.Schedule
    state_shardings: TrainState  # NamedSharding per array of the train state
    batch_sharding: NamedSharding  # rows over the data and fsdp axes (the rules' `batch`)
    replicated: NamedSharding

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab.size

    def init_state(self) -> TrainState:
        """A fresh, sharded train state (parameters initialized directly on their devices)."""
        return jax.jit(self._fresh_state, out_shardings=self.state_shardings)()

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and shardings of the train state without allocating it (to restore into)."""
        shapes = jax.eval_shape(self._fresh_state)
        return jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, self.state_shardings
        )

    def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
        """Shapes, dtypes and shardings of a global batch (`data/pipeline.py`'s layout), to lower against."""
        shape = (self.cfg.train.global_batch, self.cfg.model.context)

        def spec(shape: tuple[int, ...], dtype: Any) -> jax.ShapeDtypeStruct:
            return jax.ShapeDtypeStruct(shape, dtype, sharding=self.batch_sharding)

        return {
            "inputs": spec(shape, jnp.int32),
            "targets": spec(shape, jnp.int32),
            "loss_mask": spec(shape, jnp.float32),
            "times": spec(shape, jnp.int32),
            "durations": spec(shape[:1], jnp.int32),
            "sounding_head": spec((shape[0], note_slots(self.tokenizer.vocab).count), jnp.int32),
        }

    def _fresh_state(self) -> TrainState:
        cfg = self.cfg
        model = build_model(cfg.model, self.tokenizer.vocab, cfg.train.seed)
        params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        rng = jax.random.key_data(jax.random.key(cfg.train.seed + 1))
        zero = jnp.zeros((), jnp.int32)
        return TrainState(params, self.optimizer.init(params), zero, rng, zero)


def check_batch_split(cfg: Config, mesh: Mesh) -> None:
    """Each of the `grad_accum_steps` microbatches must split evenly over the batch axes of the mesh."""
    rows, accum, batch = batch_devices(mesh), cfg.train.grad_accum_steps, cfg.train.global_batch
    if accum < 1 or batch % (accum * rows):
        raise UserError(
            f"train.global_batch={batch} must split into train.grad_accum_steps={accum} microbatches "
            f"that divide evenly over data x fsdp = {rows} devices"
        )


def make_train_setup(cfg: Config, mesh: Mesh, tokenizer: Tokenizer | None = None) -> TrainSetup:
    """Builds the setup of `cfg` on `mesh` (with `tokenizer`, the one of `cfg.encoding`, when the caller
    has it); the batch must split over the mesh's batch axes."""
    check_batch_split(cfg, mesh)
    tokenizer = Tokenizer(cfg.encoding) if tokenizer is None else tokenizer
    optimizer = make_optimizer(cfg.train)
    abstract_model, abstract = abstract_params(cfg.model, tokenizer.vocab, mesh)
    params = jax.tree.map(lambda s: s.sharding, abstract)
    replicated = NamedSharding(mesh, PartitionSpec())
    # Real shapes: Muon's state depends on each matrix's axes.
    abstract_opt = jax.eval_shape(optimizer.init, abstract)
    opt = optax.tree_utils.tree_map_params(
        optimizer,
        lambda state, sharding: state if isinstance(state, MaskedNode) else sharding,
        abstract_opt,
        params,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, MaskedNode),  # a parameter another optimizer of a partition owns
    )
    return TrainSetup(
        cfg=cfg,
        mesh=mesh,
        tokenizer=tokenizer,
        graphdef=nnx.graphdef(abstract_model),
        optimizer=optimizer,
        schedule=learning_rate_schedule(cfg.train),
        state_shardings=TrainState(params, opt, replicated, replicated, replicated),
        batch_sharding=NamedSharding(mesh, PartitionSpec(batch_axes())),
        replicated=replicated,
    )
