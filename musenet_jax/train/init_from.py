"""Fine-tuning: a new run starts from another run's parameters (`train.init_from: BASE_WORKDIR`).

The new run's vocabulary may have composer labels the base lacked (its dataset brought them, see
`data/labels.py`). Composer tokens sit before the instrument, wait and note tokens, so a new label moves
every later id: the parameters with a vocabulary axis (the token embedding, the output head's kernel and
bias) are therefore rebuilt row by row by token *name*: each token takes the base's row of the same token,
and a composer the base never saw starts from the base's `composer:unknown` row (what the base does
with a piece by an unnamed composer), to be specialised by the fine-tuning. Every other parameter is
the base's as it is. Only the composers may differ between the two vocabularies, and the two models must
have the same architecture; the optimizer starts afresh.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from musenet_jax.config import Config
from musenet_jax.encoding.vocab import KIND_COMPOSER, UNKNOWN_COMPOSER, Vocabulary
from musenet_jax.errors import UserError
from musenet_jax.model.config import ModelConfig
from musenet_jax.model.sharding import state_shardings
from musenet_jax.model.transformer import build_model
from musenet_jax.train.checkpoint import RunCheckpoints, check_fingerprint, choose_step
from musenet_jax.train.setup import TrainSetup

VOCAB_AXIS = "vocab"


def vocab_rows(base: Vocabulary, new: Vocabulary) -> np.ndarray:
    """For each id of `new`, the id of the same token in `base` (a new composer: the base's `unknown`)."""
    base_id = {s: i for i, s in enumerate(base.strings)}
    unknown = base.composer_id(UNKNOWN_COMPOSER)
    rows = np.empty(new.size, np.int64)
    for i, token in enumerate(new.strings):
        if token in base_id:
            rows[i] = base_id[token]
        elif new.token_kinds[i] == KIND_COMPOSER:
            rows[i] = unknown
        else:
            raise UserError(
                f"train.init_from: the base run's vocabulary has no token {token!r}; a fine-tuned run may "
                "add composer labels, but its other encoding settings must be the base's"
            )
    return rows


def fine_tune_params(
    base_workdir: str, cfg: Config, setup: TrainSetup, say: Callable[[str], None] = print
) -> Any:
    """The latest checkpoint of `base_workdir` as the parameters of `cfg`'s model, on `setup`'s shardings."""
    checkpoints = RunCheckpoints(base_workdir, read_only=True)
    try:
        step = choose_step(checkpoints, "latest", base_workdir)
        meta = checkpoints.read_meta(step)
        base_cfg = meta.resolved_config()
        base_vocab = Vocabulary(base_cfg.encoding)
        check_fingerprint(meta, base_vocab.fingerprint(), checkpoints.directory)
        _check_same_model(base_cfg, cfg)
        rows = vocab_rows(base_vocab, Vocabulary(cfg.encoding))
        abstract_model = nnx.eval_shape(lambda: build_model(base_cfg, meta.vocab_size))
        params = nnx.state(abstract_model, nnx.Param)
        shardings = nnx.to_pure_dict(state_shardings(params, setup.mesh))
        abstract = jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
            nnx.to_pure_dict(params),
            shardings,
        )
        base = checkpoints.restore(step, abstract_params=abstract)["params"]
    finally:
        checkpoints.close()
    axes = _vocab_axes(cfg, setup.vocab_size)
    added = [c for c in Vocabulary(cfg.encoding).composers if c not in base_vocab.composers]
    say(
        f"fine-tuning from step {step} of {base_workdir}"
        + (f"; new composer labels start from `unknown`: {', '.join(added)}" if added else "")
    )
    index = jnp.asarray(rows)

    def remap(tree: Any) -> Any:
        return jax.tree_util.tree_map_with_path(
            lambda path, x: jnp.take(x, index, axis=axes[_keys(path)]) if _keys(path) in axes else x, tree
        )

    return jax.jit(remap, out_shardings=setup.state_shardings.params)(base)


def _check_same_model(base: Config, new: Config) -> None:
    execution = set(ModelConfig.EXECUTION_KEYS)
    base_model, new_model = dataclasses.asdict(base.model), dataclasses.asdict(new.model)
    changed = sorted(k for k in new_model if k not in execution and base_model.get(k) != new_model[k])
    if changed:
        raise UserError(
            f"train.init_from: the base run's model differs in {', '.join('model.' + k for k in changed)}; "
            "fine-tune with the base's model settings (its config.json)"
        )


def _vocab_axes(cfg: Config, vocab_size: int) -> dict[tuple[str, ...], int]:
    """Path (as keys) of every parameter with a vocabulary axis -> that axis."""
    abstract = nnx.eval_shape(lambda: build_model(cfg, vocab_size))
    axes = {}
    for path, variable in nnx.to_flat_state(nnx.state(abstract, nnx.Param)):
        names = variable.get_metadata().get("out_sharding") or ()
        if VOCAB_AXIS in names:
            axes[tuple(str(k) for k in path)] = tuple(names).index(VOCAB_AXIS)
    return axes


def _keys(path: tuple) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", k)) for k in path)
