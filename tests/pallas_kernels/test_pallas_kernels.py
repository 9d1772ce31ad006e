"""Pallas block-sparse kernels (TPU Mosaic and GPU Triton families) in interpret mode on CPU equal the
dense reference in outputs and dq/dk/dv, touch only the layout's active blocks, run inside shard_map on a
mesh, and compile ahead of time for TPU topologies / lower to Triton for CUDA."""

import functools
import json
import logging
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from musenet_jax.attention import pallas_backend
from musenet_jax.attention import patterns as P
from musenet_jax.attention.backends import attend, backend_layout, sparse_attend
from musenet_jax.attention.layouts import make_layout
from musenet_jax.errors import UserError
from pallas_kernels import flash_tpu, strided_far_tpu
from pallas_kernels.sparse_flash import merged_attention, sparse_flash_attention

BLOCK = 128
ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def _unoptimized_cpu_compiles():
    """Interpret-mode kernels become large XLA programs; compiling them unoptimized halves the test time."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


def _inputs(n, batch, heads, dim, dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal((batch, n, heads, dim)), dtype) for _ in range(4)]


def _gpu_attend(q, k, v, patterns):
    """attend() with the GPU (Triton) kernel family forced, interpreted: same layouts, same merge."""
    (pattern,) = patterns
    layout = backend_layout(pattern, q.shape[1], backend="pallas", block_size=BLOCK)
    kernel = functools.partial(sparse_flash_attention, kernel="gpu", interpret=True)
    return sparse_attend(q, k, v, layout, kernel)


def _out_and_grads(fn, q, k, v, cotangent):
    def run(q, k, v):
        out, pullback = jax.vjp(fn, q, k, v)
        return out, pullback(cotangent)

    return jax.jit(run)(q, k, v)


def _backend(name):
    return lambda q, k, v, patterns: attend(q, k, v, patterns, backend=name, block_size=BLOCK)


# (pattern, seq_len, batch, heads, head_dim): blocks are 128 on both sides for the Pallas kernels, so every
# case spans at least 2 blocks; lengths that are not block multiples give partial blocks; fixed(128, 32)
# at 256 has a query block with no active block (the summary part of the first 128 positions); 4 heads of
# 8 or 16 dims run in one grid step (flash_tpu.heads_per_step); strided(256) at 384 has full blocks;
# 6 heads of 64 sit in 3 lane pairs of one [block, 384] step (flash_tpu.lane_group).
CASES = [
    (P.strided(32), 256, 1, 4, 16),
    (P.strided(64), 300, 2, 1, 32),
    (P.strided(256), 384, 1, 2, 8),
    # fixed's summary keys fill a whole block (512 / 64 x 16 = 128 slots): read in place from k / v and
    # their dk / dv added in place by the local part's dk/dv kernel (flash_tpu kv_tail / add_kv_tail)
    (P.fixed(64, 16), 512, 1, 4, 16),
    (P.fixed(128, 32), 256, 2, 1, 8),  # summary slots padded to a whole block: sliced out by XLA
    (P.fixed(32, 8), 300, 1, 3, 32),
    (P.strided(64), 256, 1, 6, 64),  # heads of 64 in lane pairs, 3 pairs a step: the loop over lane groups
    (P.strided(16), 512, 2, 2, 32),  # n = 32 * 16: the far part folded into 32 heads of 32 rows (one block)
    # ... and with heads filling 128 lanes: the far part's residue kernels on the [B, 32, 16, 128] view
    (P.strided(16), 512, 1, 4, 32),
    (P.union(P.strided(32), P.fixed(64, 16)), 256, 1, 2, 16),  # 4 components: 3 merged before the last
]


def _tpu_fused_attend(q, k, v, patterns):
    """attend() on the Pallas backend with the TPU kernels' fused backward."""
    return attend(q, k, v, patterns, backend="pallas", block_size=BLOCK, fused_backward=True)


def _gpu_merged_attend(q, k, v, patterns):
    """The backend's one-op path (merged_attention) with the Triton kernels forced, interpreted."""
    (pattern,) = patterns
    layout = backend_layout(pattern, q.shape[1], backend="pallas", block_size=BLOCK)
    return merged_attention(q, k, v, pallas_backend._parts(layout), kernel="gpu", interpret=True)


FAMILIES = {
    "tpu": _backend("pallas"),
    "tpu_fused": _tpu_fused_attend,
    "gpu": _gpu_attend,
    "gpu_merged": _gpu_merged_attend,
}  # on CPU, attend(backend="pallas") runs the TPU kernels


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "pattern,n,batch,heads,dim", CASES, ids=[f"{c[0].name}-n{c[1]}-h{c[3]}-d{c[4]}" for c in CASES]
)
def test_kernels_match_dense_in_float32(family, pattern, n, batch, heads, dim):
    q, k, v, cotangent = _inputs(n, batch, heads, dim)
    out_d, grads_d = _out_and_grads(
        lambda q, k, v: _backend("dense")(q, k, v, (pattern,)), q, k, v, cotangent
    )
    out_p, grads_p = _out_and_grads(lambda q, k, v: FAMILIES[family](q, k, v, (pattern,)), q, k, v, cotangent)
    np.testing.assert_allclose(out_p, out_d, atol=2e-6, rtol=1e-5)
    for g_p, g_d in zip(grads_p, grads_d):  # dq, dk, dv
        np.testing.assert_allclose(g_p, g_d, atol=5e-6, rtol=1e-5)
    assert min(float(jnp.abs(g).max()) for g in grads_d) > 0.1  # the comparison is not between zeros


BF16_TOLERANCE = 3e-2  # bf16 inputs, f32 accumulation: the kernel and the dense reference agree to ~1%


BF16_CASES = [
    (P.fixed(64, 16), 256, 2, 32),
    (P.strided(16), 512, 2, 64),  # the far part's residue kernels: two residues packed in each 32-bit word
]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("case", BF16_CASES, ids=[c[0].name for c in BF16_CASES])
def test_kernels_in_bfloat16_stay_within_stated_tolerance(family, case):
    pattern, n, heads, dim = case
    q, k, v, cotangent = _inputs(n, 1, heads, dim, jnp.bfloat16)
    pattern = (pattern,)
    out_d, grads_d = _out_and_grads(lambda q, k, v: _backend("dense")(q, k, v, pattern), q, k, v, cotangent)
    out_p, grads_p = _out_and_grads(lambda q, k, v: FAMILIES[family](q, k, v, pattern), q, k, v, cotangent)
    assert out_p.dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in grads_p)
    for got, want in zip((out_p, *grads_p), (out_d, *grads_d)):
        got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
        np.testing.assert_allclose(got, want, atol=BF16_TOLERANCE, rtol=BF16_TOLERANCE)


@pytest.mark.parametrize("family,fused", [("tpu", False), ("tpu", True), ("gpu", False)])
def test_kernels_touch_only_the_active_blocks(family, fused):
    """Batch element r fills every block that the table row r (or column r) does not list with NaN:
    a kernel that computed on any other block would turn that row's results into NaN. Together with the
    equality to dense above (no active block skipped or counted twice) the kernels visit exactly the
    active blocks."""
    layout = make_layout(P.strided(32), 384, BLOCK, min_block_size=BLOCK)
    for comp in layout.components:
        lay = comp.layout
        assert lay.num_q_blocks == lay.num_k_blocks
        blocks, length = lay.num_q_blocks, lay.num_q_blocks * BLOCK
        q, k, v, dout = _inputs(length, blocks, 2, 16, seed=1)

        def poisoned(x, keep):  # keep[b, block]: block stays finite in batch element b
            rows = np.repeat(keep, BLOCK, axis=1)[:, :, None, None]
            return jnp.where(rows, x, jnp.nan)

        active = np.zeros((blocks, blocks), bool)  # [q block, k block]
        active[lay.q_block_ids, lay.k_block_ids] = True

        def run(q, k, v, dout, lay=lay):
            fn = functools.partial(
                sparse_flash_attention, layout=lay, kernel=family, interpret=True, fused_backward=fused
            )
            (out, _), pullback = jax.vjp(fn, q, k, v)
            return (out, *pullback((dout, jnp.zeros(out.shape[:-1]))))

        run = jax.jit(run)
        clean = run(q, k, v, dout)
        by_row = run(q, poisoned(k, active), poisoned(v, active), dout)  # element r keeps row r's key blocks
        by_col = run(
            poisoned(q, active.T), k, v, poisoned(dout, active.T)
        )  # element c keeps column c's query blocks
        for r in range(blocks):
            own = slice(r * BLOCK, (r + 1) * BLOCK)
            for got, want in ((by_row[0], clean[0]), (by_row[1], clean[1])):  # out, dq of row r
                np.testing.assert_allclose(got[r, own], want[r, own], atol=1e-6)
            for got, want in ((by_col[2], clean[2]), (by_col[3], clean[3])):  # dk, dv of column r
                np.testing.assert_allclose(got[r, own], want[r, own], atol=1e-6)
        assert np.isnan(np.asarray(by_row[0])).any()  # the poison is really there


def test_kernel_runs_inside_shard_map_over_batch_and_heads():
    mesh = Mesh(
        np.asarray(jax.devices()[:8]).reshape(2, 2, 2),
        ("data", "fsdp", "tensor"),
        axis_types=(AxisType.Auto,) * 3,
    )
    q, k, v, cotangent = _inputs(48, 4, 2, 16)
    patterns = (P.strided(8), P.fixed(16, 4))  # head split: one head each, tensor axis splits them

    def fn(q, k, v):
        return attend(q, k, v, patterns, backend="pallas", block_size=BLOCK)

    single = _out_and_grads(lambda q, k, v: _backend("dense")(q, k, v, patterns), q, k, v, cotangent)
    spec = NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None, "tensor", None))
    with jax.set_mesh(mesh):
        assert "shard_map" in str(jax.make_jaxpr(fn)(q, k, v))
        sharded = _out_and_grads(fn, *(jax.device_put(x, spec) for x in (q, k, v, cotangent)))
    for got, want in zip(jax.tree.leaves(sharded), jax.tree.leaves(single)):
        np.testing.assert_allclose(got, want, atol=5e-6)


def test_shard_map_axes_follow_the_model_rules():
    from musenet_jax.model.sharding import LOGICAL_AXIS_RULES

    assert pallas_backend.BATCH_AXES == LOGICAL_AXIS_RULES["batch"]
    assert pallas_backend.HEAD_AXES == LOGICAL_AXIS_RULES["heads"]


def test_the_kernel_package_knows_no_mesh():
    """Placing the kernels on a mesh is the attention package's job: pallas_kernels/ neither calls
    shard_map nor names a mesh axis (so the model's sharding rules have one home above it)."""
    from musenet_jax.model.sharding import MESH_AXES

    sources = {p.name: p.read_text() for p in (ROOT / "pallas_kernels").glob("*.py")}
    assert "sparse_flash.py" in sources
    for name, text in sources.items():
        assert "shard_map" not in text and "PartitionSpec" not in text, name
        assert not [axis for axis in MESH_AXES if f'"{axis}"' in text or f"'{axis}'" in text], name


def test_interpret_mode_is_announced_once(caplog):
    pallas_backend._say_interpret_once.cache_clear()
    q = jax.ShapeDtypeStruct((1, 64, 1, 16), jnp.float32)
    with caplog.at_level(logging.WARNING, logger=pallas_backend.__name__):
        for _ in range(2):
            jax.eval_shape(lambda q: attend(q, q, q, (P.strided(8),), backend="pallas", block_size=BLOCK), q)
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "interpret mode" in caplog.records[0].getMessage()


def test_pallas_block_size_must_be_a_power_of_two_in_one_line():
    q = jnp.zeros((1, 256, 1, 16))
    with pytest.raises(UserError, match="power of two .*got 96") as err:
        attend(q, q, q, (P.strided(8),), backend="pallas", block_size=96)
    assert "\n" not in str(err.value)
    attend(q, q, q, (P.strided(8),), backend="xla_blocksparse", block_size=96)  # the XLA path takes any block


def test_pallas_layouts_use_blocks_of_at_least_128():
    """... except a folded component whose whole sequence is one shorter block (layouts._folded_strided)."""
    for block_size in (16, 128):
        layout = backend_layout(P.strided(128), 4096, backend="pallas", block_size=block_size)
        blocks = {
            c.name: (c.layout.block_q, c.layout.block_k, c.layout.num_q_blocks) for c in layout.components
        }
        assert blocks == {"band": (128, 128, 32), "strided": (32, 32, 1)}
    xla = backend_layout(P.strided(128), 4096, backend="xla_blocksparse", block_size=128)
    assert min(c.layout.block_q for c in xla.components) < 128  # the XLA path keeps its smaller blocks


def test_several_heads_per_step_match_one_head_per_step(monkeypatch):
    """4 heads in groups of 2 per grid step (a budget that forces it) give what 4 heads in one step give."""
    from pallas_kernels import flash_tpu

    q, k, v, cotangent = _inputs(256, 1, 4, 32)
    fn = lambda q, k, v: _backend("pallas")(q, k, v, (P.strided(64),))  # noqa: E731
    assert flash_tpu.heads_per_step(4, 32) == 4
    whole = _out_and_grads(fn, q, k, v, cotangent)
    monkeypatch.setattr(flash_tpu, "MAX_STEP_COLUMNS", 64)
    assert flash_tpu.heads_per_step(4, 32) == 2
    pairs = _out_and_grads(fn, q, k, v, cotangent)
    for got, want in zip(jax.tree.leaves(pairs), jax.tree.leaves(whole)):
        np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("fused", [False, True], ids=["split", "fused"])
@pytest.mark.parametrize("pattern", [P.strided(64), P.fixed(128, 32)], ids=lambda p: p.name)
def test_layout_blocks_wider_than_the_compute_block_match_dense(pattern, fused):
    """256 x 256 layout blocks (one DMA each) computed in two 128-key slices per step equal dense."""
    from pallas_kernels import flash_tpu

    assert flash_tpu.COMPUTE_BLOCK == 128
    q, k, v, cotangent = _inputs(512, 1, 2, 32)
    layout = make_layout(pattern, 512, 256, min_block_size=256)
    assert {(c.layout.block_q, c.layout.block_k) for c in layout.components} == {(256, 256)}
    kernel = functools.partial(sparse_flash_attention, kernel="tpu", interpret=True, fused_backward=fused)
    out_p, grads_p = _out_and_grads(
        lambda q, k, v: sparse_attend(q, k, v, layout, kernel), q, k, v, cotangent
    )
    out_d, grads_d = _out_and_grads(
        lambda q, k, v: _backend("dense")(q, k, v, (pattern,)), q, k, v, cotangent
    )
    np.testing.assert_allclose(out_p, out_d, atol=2e-6, rtol=1e-5)
    for g_p, g_d in zip(grads_p, grads_d):
        np.testing.assert_allclose(g_p, g_d, atol=5e-6, rtol=1e-5)


def _fwd_bwd(backend, patterns):
    def loss(q, k, v):
        return attend(q, k, v, patterns, backend=backend, block_size=128).astype(jnp.float32).sum()

    return jax.grad(loss, argnums=(0, 1, 2))


@pytest.mark.slow
@pytest.mark.parametrize("topology", ["v5p:2x2x1", "v5e:2x2"])
def test_tpu_kernels_compile_ahead_of_time_for_topology(topology):
    from musenet_jax.train.compile import topology_devices

    devices = topology_devices(topology)
    mesh = Mesh(
        np.asarray(devices).reshape(2, 1, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3
    )
    spec = NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None, "tensor", None))
    x = jax.ShapeDtypeStruct((2, 1024, 4, 64), jnp.bfloat16, sharding=spec)  # 8 blocks of 128 a side
    patterns = (P.strided(32), P.fixed(128, 32))
    flops = {}
    with jax.set_mesh(mesh):
        for backend in ("pallas", "dense"):
            compiled = jax.jit(_fwd_bwd(backend, patterns)).lower(x, x, x).compile()
            text = compiled.as_text()
            assert ("tpu_custom_call" in text) == (backend == "pallas")
            flops[backend] = compiled.cost_analysis()["flops"]
    # The kernels' cost estimates reach XLA's analysis: about a third of dense's blocks at 128 x 128, at 9
    # block matmuls each (forward 2, dq 3, dk/dv 4: the backward recomputes scores) against dense's 6.
    assert 0 < flops["pallas"] < 0.6 * flops["dense"]


def test_gpu_kernels_lower_to_triton_for_cuda():
    x = jax.ShapeDtypeStruct((2, 256, 2, 64), jnp.bfloat16)
    pattern = (P.strided(16),)  # 2 components x (forward, dq, dk/dv) = 6 Triton calls
    lowered = jax.jit(_fwd_bwd("pallas", pattern)).trace(x, x, x).lower(lowering_platforms=("cuda",))
    text = lowered.as_text()
    calls = [line for line in text.splitlines() if "stablehlo.custom_call @__gpu$xla.gpu.triton" in line]
    assert len(calls) == 6
    assert "tpu_custom_call" not in text
    for call in calls:  # masks come from positions: int operands are tables and [slots] position vectors
        operands = call[call.rindex(" : (") :].split(" -> ")[0]
        integers = re.findall(r"tensor<([0-9x]+)xi(?:8|32)>", operands)
        assert integers and all(shape.count("x") <= 1 for shape in integers), operands
        # query and key positions: 256 slots (the band), or the far part folded to 256 / 16 = 16 rows of
        # 32 heads, grown to Triton's 64-row minimum (sparse_flash._gpu_block)
        assert sum(shape in ("256", "64") for shape in integers) == 2, operands


@pytest.mark.slow
def test_tiny_model_with_pallas_matches_xla_blocksparse_in_loss_and_gradients():
    from model_inputs import VOCAB, batch, tiny_model_config

    from musenet_jax.model.transformer import MuseNet
    from musenet_jax.train.step import summed_loss

    b = batch(length=64)
    b = b | {
        "targets": jnp.roll(b["inputs"], -1, axis=1),
        "loss_mask": jnp.ones(b["inputs"].shape, jnp.float32),
    }
    results = {}
    for backend in ("pallas", "xla_blocksparse"):
        model = MuseNet(tiny_model_config(attention=backend), VOCAB, rngs=nnx.Rngs(0))

        def loss(m):
            total, count = summed_loss(m, b, jax.random.key(0), 0.0)
            return total / count

        value, grads = nnx.jit(nnx.value_and_grad(loss))(model)
        results[backend] = (value, jax.tree.leaves(grads))
    (v_p, g_p), (v_x, g_x) = results["pallas"], results["xla_blocksparse"]
    np.testing.assert_allclose(v_p, v_x, rtol=1e-6)
    assert len(g_p) == len(g_x) > 10
    for a, b_ in zip(g_p, g_x):
        np.testing.assert_allclose(a, b_, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_attention_bench_on_cpu_reports_tpu_cost_of_pallas_vs_dense():
    """The real CLI in a fresh process: libtpu reads its Mosaic dump flag once per process."""
    import os
    import subprocess
    import sys

    argv = ["--seq", "2048", "--pattern", "strided", "--stride", "128", "--heads", "2", "--dtype", "bfloat16"]
    done = subprocess.run(
        [sys.executable, "-m", "musenet_jax.cli.main", "bench", "attention", *argv]
        + ["--backends", "dense,pallas,pallas_fused", "--json"],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["backend"] for r in rows] == ["dense", "pallas", "pallas_fused"]
    dense, pallas, fused = rows
    assert pallas["fwd_bwd_gflop"] > 0 and pallas["fwd_bwd_gbytes"] > 0
    for row in rows:  # the whole op = the kernels' declared cost + the XLA glue around them
        assert row["fwd_bwd_gbytes"] == pytest.approx(row["kernel_gbytes"] + row["glue_gbytes"])
        assert row["code_mbytes"] > 0 and row["est_ms"] == pytest.approx(row["kernel_ms"] + row["glue_ms"])
    assert dense["kernel_gbytes"] == 0 and "kernels" not in dense
    assert pallas["kernel_gbytes"] > 0 and set(pallas["kernels"]) == {
        "sparse_flash_fwd",
        "sparse_flash_dq",
        "sparse_flash_dkv",
        "sparse_flash_delta",  # the backward's rowsum(out * dout)
        "strided_far_fwd",  # the far part, read in place (strided_far_tpu): one forward, one backward kernel
        "strided_far_bwd",
    }
    assert all(k["vector_ops_per_step"] > 0 for k in pallas["kernels"].values())
    assert pallas["flops_ratio_fwd_bwd"] > 2 and pallas["density"] < 0.5  # counted from the active blocks
    # The fused backward: 5 block matmuls per active block instead of 7, the same forward.
    assert (
        fused["fwd_gflop"] == pallas["fwd_gflop"] and fused["fwd_bwd_gflop"] < 0.9 * pallas["fwd_bwd_gflop"]
    )


def test_equality_cases_cover_empty_rows_and_partial_blocks():
    """The CASES above reach the kernel branches that matter: a query block with no active block, and
    partial (masked) blocks next to full ones."""
    kinds = set()
    for pattern, n, *_ in CASES:
        for comp in backend_layout(pattern, n, backend="pallas", block_size=BLOCK).components:
            lay = comp.layout
            kinds |= {"empty_row"} if (lay.kv_counts == 0).any() else set()
            kinds |= {"partial" if m else "full" for m in lay.mask_ids}
    assert kinds == {"empty_row", "partial", "full"}


def test_equality_cases_cover_both_ways_of_running_the_strided_far_part():
    """strided(l)'s folded far part runs the residue kernels (strided_far_tpu) where heads fill 128-lane
    groups, and the fold into heads elsewhere: the CASES reach both."""
    ways = set()
    for pattern, n, _, heads, dim in CASES:
        for comp in backend_layout(pattern, n, backend="pallas", block_size=BLOCK).components:
            if comp.fold > 1:
                ways.add(
                    strided_far_tpu.applies(
                        comp.layout,
                        length=n,
                        stride=comp.fold,
                        columns=heads * dim,
                        dim=dim,
                        dtype=jnp.float32,
                    )
                )
    assert ways == {True, False}


def test_equality_cases_cover_both_ways_of_reading_the_fixed_summary_keys():
    """fixed(l, c)'s summary keys are read in place by the TPU kernels where they fill whole blocks
    (flash_tpu.tail_applies), else sliced out by XLA: the CASES reach both."""
    ways = set()
    for pattern, n, *_ in CASES:
        for part in pallas_backend._parts(backend_layout(pattern, n, backend="pallas", block_size=BLOCK)):
            if part.kv_tail:
                stride, tail = part.kv_tail
                ways.add(flash_tpu.tail_applies(part.layout, length=n, stride=stride, tail=tail))
    assert ways == {True, False}


@pytest.mark.slow
def test_summary_keys_read_in_place_touch_only_the_summary_rows():
    """With kv_tail the kernels read the last c of every l rows of the full-length k / v: every other row
    is NaN here and the results equal those on the XLA slice; add_kv_tail adds slot-order dk / dv to
    exactly those rows of a natural-order component's dk / dv."""
    n, heads, dim, stride, tail = 512, 2, 16, 64, 16
    local, summary = pallas_backend._parts(
        backend_layout(P.fixed(stride, tail), n, backend="pallas", block_size=BLOCK)
    )
    assert summary.kv_tail == (stride, tail) and local.kv_tail is None
    q, k, v, dout = (x.reshape(1, n, heads * dim) for x in _inputs(n, 1, heads, dim, seed=2))
    is_tail = (np.arange(n) % stride >= stride - tail)[None, :, None]
    poisoned = [jnp.where(is_tail, x, jnp.nan) for x in (k, v)]
    compact = [x[:, is_tail[0, :, 0]] for x in (k, v)]
    run = functools.partial(flash_tpu.forward, layout=summary.layout, heads=heads, interpret=True, scale=0.25)
    out_in_place, lse_in_place = jax.jit(functools.partial(run, kv_tail=(stride, tail)))(q, *poisoned)
    out_sliced, lse_sliced = jax.jit(run)(q, *compact)
    np.testing.assert_allclose(out_in_place, out_sliced, atol=1e-6)
    np.testing.assert_array_equal(lse_in_place, lse_sliced)
    assert np.isfinite(np.asarray(out_in_place)).all() and np.isfinite(np.asarray(lse_in_place)).any()

    lse = jnp.where(jnp.isfinite(lse_sliced), lse_sliced, 0.0)
    delta = jnp.asarray(np.random.default_rng(3).standard_normal(lse.shape), jnp.float32)
    back = functools.partial(
        flash_tpu.backward, layout=summary.layout, heads=heads, interpret=True, scale=0.25
    )
    in_place = jax.jit(functools.partial(back, kv_tail=(stride, tail)))(q, *poisoned, dout, lse, delta)
    sliced = jax.jit(back)(q, *compact, dout, lse, delta)
    for got, want in zip(in_place, sliced):  # dq [B, n, HD]; dk, dv [B, n / l * c, HD] in slot order
        assert np.isfinite(np.asarray(got)).all()
        np.testing.assert_allclose(got, want, atol=1e-5)

    def padded(g):
        full = np.zeros((1, n, heads * dim), np.float32)
        full[:, is_tail[0, :, 0]] = np.asarray(g)
        return jnp.asarray(full)

    back = functools.partial(flash_tpu.backward, layout=local.layout, heads=heads, interpret=True)
    added_in_place = jax.jit(lambda *xs: back(*xs[:6], add=xs[6:], add_kv_tail=(stride, tail)))(
        q, k, v, dout, lse, delta, *sliced
    )
    added = jax.jit(lambda *xs: back(*xs[:6], add=xs[6:]))(
        q, k, v, dout, lse, delta, sliced[0], padded(sliced[1]), padded(sliced[2])
    )
    for got, want in zip(added_in_place, added):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert float(jnp.abs(sliced[1]).max()) > 0.1  # the added gradients are not zeros


@pytest.mark.slow
def test_summary_keys_in_place_in_blocks_of_two_strides_match_dense():
    """256-row blocks at fixed(128, 32): a summary key block is 8 strides' tails read in place in two
    128-key slices, and the local part's dk/dv kernel adds the tails of two strides per key block."""
    n, pattern = 1024, P.fixed(128, 32)
    parts = pallas_backend._parts(make_layout(pattern, n, 256, min_block_size=256))
    tails = [p for p in parts if p.kv_tail]
    assert len(tails) == 1 and tails[0].layout.block_k == 256
    assert flash_tpu.tail_applies(tails[0].layout, length=n, stride=128, tail=32)
    q, k, v, cotangent = _inputs(n, 1, 2, 32)
    wide = functools.partial(merged_attention, parts=parts, kernel="tpu", interpret=True)
    out_p, grads_p = _out_and_grads(wide, q, k, v, cotangent)
    out_d, grads_d = _out_and_grads(
        lambda q, k, v: _backend("dense")(q, k, v, (pattern,)), q, k, v, cotangent
    )
    np.testing.assert_allclose(out_p, out_d, atol=2e-6, rtol=1e-5)
    for g_p, g_d in zip(grads_p, grads_d):
        np.testing.assert_allclose(g_p, g_d, atol=5e-6, rtol=1e-5)


def test_gpu_kernels_have_no_branch_around_their_matmuls_and_backward_tiles():
    """A `lax.cond` around the matmuls keeps Triton from pipelining the block loop: the Triton kernels
    (forward, dq, dk/dv) mask full and partial blocks on one code path."""
    layout = make_layout(P.strided(32), 256, BLOCK, min_block_size=BLOCK).components[0].layout
    x = jax.ShapeDtypeStruct((1, 256, 2, 16), jnp.float32)

    def loss(q, k, v):
        out, lse = sparse_flash_attention(q, k, v, layout, kernel="gpu")
        return out.sum() + jnp.where(jnp.isfinite(lse), lse, 0.0).sum()

    jaxpr = str(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(x, x, x))
    assert jaxpr.count("pallas_call") == 3 and "dot_general" in jaxpr
    assert "cond[" not in jaxpr and " cond " not in jaxpr
    # The backward has its own tiles: dq / dk-dv programs own 64 rows / keys of the 2 layout blocks of 128.
    from pallas_kernels.flash_gpu import BACKWARD_TILE

    assert BACKWARD_TILE == 64 and re.findall(r"grid=\(\d+, 1, 2\)", jaxpr) == [
        "grid=(2, 1, 2)",  # forward: one program per layout block
        "grid=(4, 1, 2)",  # dq
        "grid=(4, 1, 2)",  # dk/dv
    ]
