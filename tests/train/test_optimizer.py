"""train/optimizer.py: the learning-rate schedule's shape, which parameters are weight-decayed, and which
Muon orthogonalizes.

The schedule must start at 0, peak after warmup and end at min_lr; decay must skip biases and norm
scales even when stacked layers give them a leading layer axis (rank cannot tell them apart)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from optax.contrib import MuonDimensionNumbers

from musenet_jax.config import load_config
from musenet_jax.encoding.vocab import Vocabulary
from musenet_jax.model.transformer import build_model
from musenet_jax.train.config import TrainConfig
from musenet_jax.train.optimizer import decay_mask, learning_rate_schedule, make_optimizer, muon_dimensions


def test_schedule_zero_then_peak_then_min():
    cfg = TrainConfig(steps=100, warmup_steps=10, learning_rate=1e-3, min_lr_ratio=0.1)
    schedule = learning_rate_schedule(cfg)
    assert float(schedule(0)) == 0.0
    assert float(schedule(10)) == pytest.approx(1e-3)
    assert float(schedule(5)) == pytest.approx(5e-4)
    assert float(schedule(100)) == pytest.approx(1e-4)
    values = np.array([float(schedule(s)) for s in range(10, 101)])
    assert np.all(np.diff(values) <= 1e-12)  # monotone decay after warmup
    assert values.max() == pytest.approx(1e-3)


def test_schedule_warmup_longer_than_run_is_clipped():
    """warmup_steps >= steps still reaches the peak before the end instead of never leaving warmup."""
    cfg = TrainConfig(steps=5, warmup_steps=100, learning_rate=1e-3)
    schedule = learning_rate_schedule(cfg)
    assert float(schedule(4)) == pytest.approx(1e-3)


def test_decay_mask_excludes_biases_and_scales_whatever_their_rank():
    params = {
        "layers": {
            "attn": {"kernel": jnp.ones((2, 4, 4)), "bias": jnp.ones((2, 4))},
            "norm": {"scale": jnp.ones((2, 4)), "bias": jnp.ones((2, 4))},
        },
        "embed": {"embedding": jnp.ones((10, 4))},
    }
    mask = decay_mask(params)
    assert mask == {
        "layers": {"attn": {"kernel": True, "bias": False}, "norm": {"scale": False, "bias": False}},
        "embed": {"embedding": True},
    }


def test_decay_mask_on_real_nnx_state():
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    mask = decay_mask(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    assert mask == {"kernel": True, "bias": False}


def test_optimizer_decays_kernels_not_biases_and_clips():
    cfg = TrainConfig(steps=10, warmup_steps=0, learning_rate=0.1, weight_decay=0.5, clip_norm=1.0)
    tx = make_optimizer(cfg)
    params = {"kernel": jnp.ones((2,)), "bias": jnp.ones((2,))}
    zero = jax.tree.map(jnp.zeros_like, params)
    state = tx.init(params)
    # Step 0 has lr 0; step 1 with zero gradients: only weight decay moves parameters.
    _, state = tx.update(zero, state, params)
    updates, _ = tx.update(zero, state, params)
    assert np.all(np.asarray(updates["kernel"]) < 0)
    assert np.all(np.asarray(updates["bias"]) == 0)
    # Clipping: a huge gradient is scaled to global norm 1 before Adam sees it.
    clip = optax.clip_by_global_norm(cfg.clip_norm)
    clipped, _ = clip.update({"g": jnp.full((4,), 1e6)}, clip.init(None))
    assert float(optax.global_norm(clipped)) == pytest.approx(1.0, rel=1e-5)


def _small_model_params(overrides: list[str]) -> dict:
    cfg = load_config("tiny", ["model.d_model=32", "model.context=64", *overrides])
    return nnx.to_pure_dict(nnx.state(build_model(cfg.model, Vocabulary(cfg.encoding)), nnx.Param))


@pytest.mark.parametrize("scan", [True, False])
def test_muon_takes_the_hidden_matrices_and_leaves_the_rest_to_adamw(scan):
    params = _small_model_params([f"model.scan_layers={str(scan).lower()}"])
    dims = muon_dimensions(params)
    leaves = jax.tree_util.tree_leaves_with_path(
        dims, is_leaf=lambda x: x is None or isinstance(x, MuonDimensionNumbers)
    )
    named = {tuple(str(getattr(entry, "key", entry)) for entry in path): value for path, value in leaves}
    assert len(named) == len(jax.tree.leaves(params))
    assert sorted({names[-2] for names, value in named.items() if value is not None}) == [
        "down",
        "key",
        "out",
        "query",
        "up",
        "value",
    ]
    for names, value in named.items():
        if names[-1] != "kernel" or "layers" not in names:  # embeddings, the head, biases, norm scales
            assert value is None, names


def test_muon_orthogonalizes_each_layers_update_and_adamw_would_not():
    params = _small_model_params([])
    grads = jax.tree.map(
        lambda x: jax.random.normal(jax.random.key(x.size), x.shape) * jnp.linspace(0.1, 3.0, x.shape[-1]),
        params,
    )
    cfg = TrainConfig(steps=10, warmup_steps=0, learning_rate=1e-2, weight_decay=0.0)

    def first_update(optimizer: str) -> dict:
        tx = make_optimizer(dataclasses.replace(cfg, optimizer=optimizer))
        updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)  # one program, not op by op
        return updates

    def spread(update: jax.Array) -> float:
        singular = np.linalg.svd(np.asarray(update, np.float64), compute_uv=False)
        return float(singular[0] / singular[-1])

    up_kernel = lambda tree: tree["layers"]["blocks"][0]["mlp"]["up"]["kernel"]  # noqa: E731
    muon, adamw = first_update("muon"), first_update("adamw")
    layers = up_kernel(params).shape[0]
    for layer in range(layers):  # each stacked layer is its own matrix
        assert spread(up_kernel(muon)[layer]) < 2.0
        assert spread(up_kernel(adamw)[layer]) > 2.0


def test_an_unknown_optimizer_is_one_line_listing_the_choices():
    with pytest.raises(ValueError, match="train.optimizer must be one of adamw, muon, got 'sgd'"):
        TrainConfig(optimizer="sgd")
