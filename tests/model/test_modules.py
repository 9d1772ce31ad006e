"""model/modules.py: the transformer block's causality, decode-vs-full agreement, and allowed_row.

A later token must never change an earlier position's output (training would leak the answer), and
one-token decoding against a KV cache must give what the full-sequence pass gives at that position."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from model_inputs import tiny_model_config

from musenet_jax.attention.patterns import fixed, strided
from musenet_jax.model.modules import Block, Mlp, allowed_row

T = 64
PATTERNS = {"strided": (strided(8),), "head_split": (strided(8), fixed(8, 2))}


def _x(d_model, seed=0):
    return jax.random.normal(jax.random.key(seed), (2, T, d_model), jnp.float32)


@pytest.mark.parametrize("attention, which", [("dense", "head_split"), ("xla_blocksparse", "strided")])
def test_block_is_causal(attention, which):
    cfg = tiny_model_config(attention=attention, block_size=16, stride=8, fixed_summary=2, d_model=32)
    block = Block(cfg, PATTERNS[which], rngs=nnx.Rngs(0))
    x = _x(cfg.d_model)
    changed = x.at[:, 40:].set(_x(cfg.d_model, seed=1)[:, 40:])
    out, k, _ = block(x)
    out2, _, _ = block(changed)
    np.testing.assert_allclose(np.asarray(out[:, :40]), np.asarray(out2[:, :40]), rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.asarray(out[:, 40:]), np.asarray(out2[:, 40:]))
    assert k.shape == (2, T, cfg.n_heads, cfg.d_model // cfg.n_heads)


def test_decode_matches_the_full_pass():
    cfg = tiny_model_config(attention="dense", stride=8, fixed_summary=2, d_model=32)
    patterns = PATTERNS["head_split"]
    block = Block(cfg, patterns, rngs=nnx.Rngs(0))
    x = _x(cfg.d_model)
    full, k_full, v_full = block(x)
    shape = (2, T, cfg.n_heads, cfg.d_model // cfg.n_heads)
    k_cache, v_cache = jnp.zeros(shape), jnp.zeros(shape)
    outs = []
    for t in range(12):
        y, k_cache, v_cache = block.decode(x[:, t : t + 1], k_cache, v_cache, jnp.int32(t))
        outs.append(y)
    np.testing.assert_allclose(
        np.asarray(jnp.concatenate(outs, 1)), np.asarray(full[:, :12]), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(np.asarray(k_cache[:, :12]), np.asarray(k_full[:, :12]), rtol=1e-5, atol=1e-5)
    assert not np.any(np.asarray(k_cache[:, 12:]))  # nothing written past the decoded positions


def test_allowed_row_is_the_patterns_row_per_head_group():
    patterns = PATTERNS["head_split"]
    row = np.asarray(allowed_row(patterns, 4, jnp.int32(37), T))
    assert row.shape == (4, T)
    np.testing.assert_array_equal(row[0], patterns[0].mask(T)[37])
    np.testing.assert_array_equal(row[1], patterns[0].mask(T)[37])
    np.testing.assert_array_equal(row[2], patterns[1].mask(T)[37])
    assert not row[:, 38:].any()  # causality


def test_mlp_width_and_position_wise():
    cfg = tiny_model_config()
    mlp = Mlp(cfg, rngs=nnx.Rngs(0))
    assert mlp.up.kernel.shape == (cfg.d_model, cfg.mlp_ratio * cfg.d_model)
    x = _x(cfg.d_model)
    out = mlp(x)
    np.testing.assert_allclose(np.asarray(out[:, 5]), np.asarray(mlp(x[:, 5:6])[:, 0]), rtol=1e-5, atol=1e-6)


def test_flat_projections_equal_the_einsums_they_replace():
    """The attention projections run as one [d, H*Dh] matmul (the kernels' layout); same numbers as the
    parameters' einsums, in and out."""
    from musenet_jax.model.modules import SparseSelfAttention, flat_projection

    cfg = tiny_model_config(attention="dense", d_model=32, dtype="float32")
    attention = SparseSelfAttention(cfg, PATTERNS["strided"], rngs=nnx.Rngs(3))
    for projection in (attention.query, attention.out):  # make the biases matter
        projection.bias[...] = jax.random.normal(jax.random.key(4), projection.bias[...].shape)
    x = _x(cfg.d_model)
    heads = (cfg.n_heads, cfg.d_model // cfg.n_heads)
    q = flat_projection(attention.query, x, heads)
    np.testing.assert_allclose(np.asarray(q), np.asarray(attention.query(x)), rtol=1e-5, atol=1e-5)
    out = flat_projection(attention.out, q, (cfg.d_model,))
    np.testing.assert_allclose(np.asarray(out), np.asarray(attention.out(q)), rtol=1e-5, atol=1e-5)
