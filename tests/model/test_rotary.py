"""model/rotary.py: rotary positions make a query-key score depend on their distance only, keep norms,
and a rotary model has no learned position table."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from model_inputs import VOCAB, tiny_model_config

from musenet_jax.model.config import ModelConfig
from musenet_jax.model.rotary import apply_rotary
from musenet_jax.model.transformer import MuseNet


def _score(q, k, q_pos, k_pos):
    rq = apply_rotary(q, jnp.array([q_pos]))
    rk = apply_rotary(k, jnp.array([k_pos]))
    return float(jnp.sum(rq * rk))


def test_score_depends_on_distance_only():
    q, k = jax.random.normal(jax.random.key(0), (2, 1, 1, 1, 16))
    near = _score(q, k, 10, 7)
    np.testing.assert_allclose(_score(q, k, 510, 507), near, rtol=1e-4)
    np.testing.assert_allclose(_score(q, k, 3, 0), near, rtol=1e-4)
    assert abs(_score(q, k, 10, 2) - near) > 1e-3  # another distance scores differently


def test_traced_and_constant_positions_rotate_alike():
    x = jax.random.normal(jax.random.key(2), (1, 6, 2, 8))
    constant = apply_rotary(x, np.arange(6))
    traced = jax.jit(lambda x, p: apply_rotary(x, p))(x, jnp.arange(6))
    np.testing.assert_allclose(constant, traced, rtol=1e-5, atol=1e-6)


def test_rotation_keeps_norms_and_position_zero_is_identity():
    x = jax.random.normal(jax.random.key(1), (2, 5, 3, 8))
    rotated = apply_rotary(x, jnp.arange(5))
    np.testing.assert_allclose(jnp.linalg.norm(rotated, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(rotated[:, 0], x[:, 0], rtol=1e-6)
    assert not np.allclose(rotated[:, 1:], x[:, 1:])


def test_rotary_model_has_no_position_table_and_runs():
    learned = MuseNet(tiny_model_config(), VOCAB, rngs=nnx.Rngs(0))
    rotary = MuseNet(tiny_model_config(position_encoding="rotary"), VOCAB, rngs=nnx.Rngs(0))
    assert learned.embed.position is not None and rotary.embed.position is None
    inputs = jnp.ones((1, 16), jnp.int32)
    logits = rotary(inputs, jnp.arange(16)[None], jnp.array([20]))
    assert logits.shape == (1, 16, VOCAB) and bool(jnp.all(jnp.isfinite(logits)))


def test_odd_head_size_is_refused_in_one_line():
    with pytest.raises(ValueError, match="must be even"):
        ModelConfig(d_model=36, n_heads=4, position_encoding="rotary")
