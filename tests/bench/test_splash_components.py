"""The `jax_splash_components` baseline (splash on our layout's components, merged by lse through a
custom_vjp that runs splash's backward with the merged statistics) is exact: forward and gradients equal the
dense reference. Splash runs interpreted on CPU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musenet_jax.attention.patterns import fixed, strided
from musenet_jax.attention.reference import dense_attention
from musenet_jax.bench.splash_components import components_attention, splash_parts
from musenet_jax.errors import UserError


@pytest.mark.slow
@pytest.mark.parametrize(
    "pattern",
    # fixed(128, 32): the summary part's first 128-row query block sees no key (splash gives NaN there)
    [strided(64), fixed(64, 16), fixed(128, 32)],
    ids=lambda p: p.name,
)
def test_components_equal_dense_forward_and_gradients(pattern):
    shape = (1, 512, 2, 64)
    q, k, v, cotangent = (
        jax.random.normal(key, shape, jnp.float32) for key in jax.random.split(jax.random.key(0), 4)
    )
    out, pullback = jax.vjp(lambda *x: components_attention(*x, pattern, interpret=True), q, k, v)
    want, want_pullback = jax.vjp(lambda *x: dense_attention(*x, pattern), q, k, v)
    np.testing.assert_allclose(out, want, atol=2e-5, rtol=2e-5)
    for grad, want_grad in zip(pullback(cotangent), want_pullback(cotangent)):
        np.testing.assert_allclose(grad, want_grad, atol=2e-5, rtol=2e-5)


def test_components_partition_the_pattern():
    """Every allowed pair is computed by exactly one component, in the order its splash call sees."""
    seq = 512
    for pattern in (strided(64), fixed(64, 16)):
        counts = np.zeros((seq, seq), int)
        pos = np.arange(seq)
        for part in splash_parts(pattern, seq):
            q_pos = pos if part.q_order == "natural" else (pos % (seq // 64)) * 64 + pos // (seq // 64)
            if part.kv_order == "natural":
                k_pos = pos
            elif part.kv_order == "residue":
                k_pos = q_pos
            else:
                k_pos = pos[pos % 64 >= 64 - pattern.summary]
            rows, cols = np.nonzero(part.array)
            np.add.at(counts, (q_pos[rows], k_pos[cols]), 1)
        np.testing.assert_array_equal(counts, pattern.mask(seq).astype(int))


def test_components_need_a_length_multiple_of_the_stride():
    with pytest.raises(UserError, match="multiple of the stride"):
        splash_parts(strided(64), 500)
