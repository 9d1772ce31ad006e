"""model/cache.py: KVCache.zeros lays out [groups, blocks per group, batch, max_len, heads, head_dim], and
the cache is a pytree that passes through jit (sampling carries it through a scan)."""

import jax
import jax.numpy as jnp

from musenet_jax.model.cache import CACHE_AXES, KVCache


def test_zeros_shape_dtype_length():
    cache = KVCache.zeros(2, 3, 4, 32, 5, 8, jnp.bfloat16)
    assert cache.k.shape == cache.v.shape == (2, 3, 4, 32, 5, 8)
    assert cache.k.dtype == jnp.bfloat16 and not cache.k.any() and not cache.v.any()
    assert cache.max_len == 32
    assert cache.length.shape == () and cache.length.dtype == jnp.int32 and int(cache.length) == 0
    assert len(CACHE_AXES) == cache.k.ndim and CACHE_AXES[3] == "length"
    assert cache.held.shape == (4, 0)  # no sounding-notes slots unless the model asks for them
    assert KVCache.zeros(1, 1, 4, 8, 1, 4, jnp.float32, slots=1280).held.shape == (4, 1280)


def test_cache_is_a_pytree_through_jit():
    cache = KVCache.zeros(1, 1, 2, 8, 1, 4, jnp.float32)

    @jax.jit
    def advance(c):
        return c.replace(k=c.k.at[:, :, :, c.length].set(1.0), length=c.length + 1)

    out = advance(advance(cache))
    assert isinstance(out, KVCache) and int(out.length) == 2
    assert float(out.k[0, 0, 0, :, 0, 0].sum()) == 2.0
    assert len(jax.tree.leaves(out)) == 4  # k, v, length and the sounding-notes set
