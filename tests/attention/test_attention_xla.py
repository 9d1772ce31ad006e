"""`xla_blocksparse` equals the dense reference in outputs and gradients; it only computes active blocks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musenet_jax.attention import patterns as P
from musenet_jax.attention.backends import attend
from musenet_jax.errors import UserError

BLOCK = 16


def _inputs(n, heads=4, dim=8, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal((batch, n, heads, dim)), jnp.float32) for _ in range(4)]


def _out_and_grads(backend, patterns, q, k, v, cotangent):
    def run(q, k, v):
        out, pullback = jax.vjp(
            lambda q, k, v: attend(q, k, v, patterns, backend=backend, block_size=BLOCK), q, k, v
        )
        return out, pullback(cotangent)

    return jax.jit(run)(q, k, v)


CASES = [
    ((P.strided(16),), 128),
    ((P.strided(16),), 100),  # not a block multiple
    ((P.strided(8),), 77),
    ((P.fixed(16, 4),), 128),
    ((P.fixed(16, 4),), 90),
    ((P.strided(16), P.fixed(16, 4)), 96),  # head split: heads 0-1 strided, 2-3 fixed
    ((P.union(P.strided(8), P.fixed(16, 4)),), 70),  # merged pattern
]


@pytest.mark.parametrize(
    "patterns,n", CASES, ids=["+".join(p.name for p in ps) + f"-n{n}" for ps, n in CASES]
)
def test_blocksparse_matches_dense_forward_and_backward(patterns, n):
    q, k, v, cotangent = _inputs(n)
    out_d, grads_d = _out_and_grads("dense", patterns, q, k, v, cotangent)
    out_s, grads_s = _out_and_grads("xla_blocksparse", patterns, q, k, v, cotangent)
    np.testing.assert_allclose(out_s, out_d, atol=2e-6, rtol=1e-5)
    for g_s, g_d in zip(grads_s, grads_d):
        np.testing.assert_allclose(g_s, g_d, atol=5e-6, rtol=1e-5)
    assert float(jnp.abs(grads_d[1]).max()) > 0.1  # the comparison is not between zeros


def test_head_split_gives_each_group_its_own_pattern():
    q, k, v, _ = _inputs(48)

    @jax.jit
    def heads_split_and_alone(q, k, v):
        split = attend(q, k, v, (P.strided(4), P.fixed(16, 2)), backend="xla_blocksparse", block_size=BLOCK)
        upper = (x[:, :, 2:] for x in (q, k, v))
        fixed_alone = attend(*upper, (P.fixed(16, 2),), backend="dense", block_size=BLOCK)
        upper = (x[:, :, 2:] for x in (q, k, v))
        strided_alone = attend(*upper, (P.strided(4),), backend="dense", block_size=BLOCK)
        return split[:, :, 2:], fixed_alone, strided_alone

    split, fixed_alone, strided_alone = heads_split_and_alone(q, k, v)
    np.testing.assert_allclose(split, fixed_alone, atol=2e-6)
    assert not np.allclose(split, strided_alone, atol=1e-3)


def test_bfloat16_stays_close_to_float32():
    q, k, v, _ = _inputs(64)
    ref = attend(q, k, v, (P.strided(8),), backend="dense", block_size=BLOCK)
    low = jax.jit(
        lambda q, k, v: attend(q, k, v, (P.strided(8),), backend="xla_blocksparse", block_size=BLOCK)
    )(*(x.astype(jnp.bfloat16) for x in (q, k, v)))
    assert low.dtype == jnp.bfloat16
    np.testing.assert_allclose(low.astype(jnp.float32), ref, atol=5e-2)


def _temp_bytes(backend, pattern, n):
    q = jax.ShapeDtypeStruct((1, n, 1, 16), jnp.float32)

    def loss(q, k, v):
        return attend(q, k, v, (pattern,), backend=backend, block_size=32).sum()

    return (
        jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        .lower(q, q, q)
        .compile()
        .memory_analysis()
        .temp_size_in_bytes
    )


def test_blocksparse_memory_grows_with_active_blocks_not_n_squared():
    pattern, n = P.strided(32), 2048
    dense = _temp_bytes("dense", pattern, n)
    sparse = _temp_bytes("xla_blocksparse", pattern, n)
    assert dense >= n * n * 4  # at least one n x n float32 score matrix
    assert sparse < dense / 8


def test_bad_backend_choices_are_one_line_user_errors():
    q, k, v, _ = _inputs(32)
    with pytest.raises(UserError, match="valid: xla_blocksparse"):
        attend(q, k, v, (P.strided(4),), backend="xla_blocksparce", block_size=BLOCK)
    with pytest.raises(UserError, match="cannot be split evenly"):
        attend(q, k, v, (P.strided(4),) * 3, backend="dense", block_size=BLOCK)


def _bench(argv):
    import argparse

    from musenet_jax.cli import bench

    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers())
    args = parser.parse_args(["bench", "attention", *argv])
    return args.run(args)


def test_attention_bench_prints_one_json_object_per_backend(capsys):
    import json

    argv = [
        "--seq",
        "40",
        "--pattern",
        "fixed",
        "--heads",
        "2",
        "--head-dim",
        "8",
        "--stride",
        "8",
        "--summary",
        "2",
    ]
    assert _bench([*argv, "--block-size", "16", "--repeats", "1", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["backend"] for r in rows] == ["dense", "xla_blocksparse"]
    for r in rows:
        assert {
            "pattern",
            "seq",
            "backend",
            "density",
            "pattern_density",
            "fwd_ms",
            "fwd_bwd_ms",
            "peak_mem_mb",
        } <= set(r)
        assert r["fwd_ms"] > 0 and r["peak_mem_mb"] > 0 and r["speedup_fwd_bwd"] > 0
    assert rows[0]["density"] == 1.0 and rows[1]["pattern_density"] <= rows[1]["density"] < 1.0
    with pytest.raises(UserError, match="unknown attention backend 'xla'"):
        _bench(["--backends", "dense,xla"])


def test_attention_bench_compares_with_jax_pallas_flash_attention(capsys):
    """JAX's own flash kernel (Triton flavour, interpreted on CPU) as a side-by-side baseline."""
    import json

    argv = ["--seq", "128", "--pattern", "strided", "--heads", "1", "--head-dim", "16", "--stride", "16"]
    assert (
        _bench([*argv, "--backends", "dense,jax_flash", "--block-size", "16", "--repeats", "1", "--json"])
        == 0
    )
    dense, flash = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (
        flash["backend"] == "jax_flash" and flash["density"] == 1.0
    )  # one 128-block: the diagonal is all of it
    assert dense["speedup_vs_jax_flash_fwd_bwd"] == flash["fwd_bwd_ms"] / dense["fwd_bwd_ms"]
    assert flash["speedup_vs_jax_flash_fwd_bwd"] == 1.0
