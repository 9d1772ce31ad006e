"""The Triton kernels compiled for the GPU this runs on (not interpreted) equal the dense reference in
outputs and dq/dk/dv, in float32 and bfloat16, and touch only the layout's active blocks.

Skipped without a GPU: `musenet-jax bench device` runs this file on a lent GPU (JAX_PLATFORMS=cuda). Its
dry run (MUSENET_DEVICE_DRY_RUN=1) runs the smallest case here interpreted on the CPU, to test the plumbing;
the interpret-mode equality of every case is test_pallas_kernels.py's.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musenet_jax.attention import patterns as P
from musenet_jax.attention.backends import attend, backend_layout, sparse_attend
from musenet_jax.attention.layouts import make_layout
from pallas_kernels.sparse_flash import sparse_flash_attention

ON_GPU = jax.default_backend() == "gpu"
pytestmark = pytest.mark.skipif(
    not ON_GPU and os.environ.get("MUSENET_DEVICE_DRY_RUN") != "1",
    reason="needs a GPU (run by `musenet-jax bench device`); test_pallas_kernels.py interprets these kernels",
)
BLOCK = 128
# The kernels' float32 dots run in TF32 on a GPU (Pallas' Triton lowering at default precision: 10-bit
# mantissas), the dense reference at full precision: expected to agree to ~1e-3 there (no GPU has run this
# yet; 1e-2 leaves room, and a wrong block is off by O(1)), to float32 rounding when interpreted. bf16 inputs
# (f32 accumulation) agree to ~1% either way.
TOLERANCE = {"float32": 1e-2 if ON_GPU else 5e-6, "bfloat16": 3e-2}

# (pattern, seq_len, batch, heads, head_dim): partial blocks (300), a query block with no active block
# (fixed(128, 32) at 256), head_dims padded to 16 (8) and the model's 64 with full blocks.
CASES = [
    (P.strided(32), 256, 1, 4, 16),
    (P.strided(64), 300, 2, 1, 32),
    (P.fixed(128, 32), 256, 2, 1, 8),
    (P.fixed(32, 8), 300, 1, 3, 32),
    (P.strided(128), 1024, 1, 2, 64),
]


@pytest.fixture(autouse=True, scope="module")
def _unoptimized_cpu_compiles():
    """Interpreted (the dry run), the kernels become large XLA programs: compile them unoptimized."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", not ON_GPU)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


def _inputs(n, batch, heads, dim, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal((batch, n, heads, dim)), dtype) for _ in range(4)]


def _out_and_grads(fn, q, k, v, cotangent):
    def run(q, k, v):
        out, pullback = jax.vjp(fn, q, k, v)
        return out, pullback(cotangent)

    return jax.jit(run)(q, k, v)


def _gpu_kernels(q, k, v, pattern):
    layout = backend_layout(pattern, q.shape[1], backend="pallas", block_size=BLOCK)
    kernel = functools.partial(sparse_flash_attention, kernel="gpu", interpret=not ON_GPU)
    return sparse_attend(q, k, v, layout, kernel)


def _dense(q, k, v, pattern):
    return attend(q, k, v, (pattern,), backend="dense", block_size=BLOCK)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(
    "pattern,n,batch,heads,dim", CASES, ids=[f"{c[0].name}-n{c[1]}-h{c[3]}-d{c[4]}" for c in CASES]
)
def test_compiled_kernels_match_dense(pattern, n, batch, heads, dim, dtype):
    q, k, v, cotangent = _inputs(n, batch, heads, dim, jnp.dtype(dtype))
    with jax.default_matmul_precision("highest"):  # the reference at full precision, also on a GPU
        out_d, grads_d = _out_and_grads(lambda q, k, v: _dense(q, k, v, pattern), q, k, v, cotangent)
    out_p, grads_p = _out_and_grads(lambda q, k, v: _gpu_kernels(q, k, v, pattern), q, k, v, cotangent)
    assert out_p.dtype == q.dtype and all(g.dtype == q.dtype for g in grads_p)
    tol = TOLERANCE[dtype]
    for got, want in zip((out_p, *grads_p), (out_d, *grads_d)):  # out, dq, dk, dv
        got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
        np.testing.assert_allclose(got, want, atol=tol, rtol=tol)
    assert min(float(jnp.abs(g).max()) for g in grads_d) > 0.1  # the comparison is not between zeros


def test_compiled_kernels_touch_only_the_active_blocks():
    """Batch element r fills every block that table row r (or column r) does not list with NaN: a kernel
    that computed on any other block would turn that row's results into NaN."""
    layout = make_layout(P.strided(32), 384, BLOCK, min_block_size=BLOCK)
    for comp in layout.components:
        lay = comp.layout
        blocks = lay.num_q_blocks
        q, k, v, dout = _inputs(blocks * BLOCK, blocks, 2, 16, jnp.float32, seed=1)
        active = np.zeros((blocks, blocks), bool)  # [q block, k block]
        active[lay.q_block_ids, lay.k_block_ids] = True

        def poisoned(x, keep):  # keep[b, block]: block stays finite in batch element b
            return jnp.where(np.repeat(keep, BLOCK, axis=1)[:, :, None, None], x, jnp.nan)

        def run(q, k, v, dout, lay=lay):
            fn = functools.partial(sparse_flash_attention, layout=lay, kernel="gpu", interpret=not ON_GPU)
            (out, _), pullback = jax.vjp(fn, q, k, v)
            return (out, *pullback((dout, jnp.zeros(out.shape[:-1]))))

        run = jax.jit(run)
        clean = run(q, k, v, dout)
        by_row = run(q, poisoned(k, active), poisoned(v, active), dout)
        by_col = run(poisoned(q, active.T), k, v, poisoned(dout, active.T))
        for r in range(blocks):
            own = slice(r * BLOCK, (r + 1) * BLOCK)
            for got, want in ((by_row[0], clean[0]), (by_row[1], clean[1])):  # out, dq of row r
                np.testing.assert_allclose(got[r, own], want[r, own], atol=1e-6)
            for got, want in ((by_col[2], clean[2]), (by_col[3], clean[3])):  # dk, dv of column r
                np.testing.assert_allclose(got[r, own], want[r, own], atol=1e-6)
        assert np.isnan(np.asarray(by_row[0])).any()  # the poison is really there
