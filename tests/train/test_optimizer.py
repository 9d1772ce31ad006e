"""train/optimizer.py: the learning-rate schedule's shape and which parameters are weight-decayed.

The schedule must start at 0, peak after warmup and end at min_lr; decay must skip biases and norm
scales even when stacked layers give them a leading layer axis (rank cannot tell them apart)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from musenet_jax.train.config import TrainConfig
from musenet_jax.train.optimizer import decay_mask, learning_rate_schedule, make_optimizer


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
