"""The TPU kernels as Mosaic compiled them (ahead of time for v5p, read back from libtpu's Mosaic dump by
musenet_jax/bench/mosaic_dump.py): grids of one step per active block and head group, no transposes in the
dk/dv kernel, lane-dense row statistics, and the fused backward's single kernel. The comparison with JAX's
splash attention is the benchmark's (`bench attention --topology`), not a test's: speed lives in bench.

libtpu reads LIBTPU_INIT_ARGS once per process, so every compile here runs in a fresh subprocess."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

COMPILE = textwrap.dedent(
    """
    import json, sys, tempfile
    from musenet_jax.bench import mosaic_dump
    directory = mosaic_dump.enable(tempfile.mkdtemp(prefix="mosaic-test-"))
    import jax, jax.numpy as jnp
    from pallas_kernels import flash_tpu
    from musenet_jax.attention import patterns as P
    from musenet_jax.attention.backends import attend, backend_layout
    from musenet_jax.train.compile import topology_devices

    device = topology_devices("v5p:2x2x1")[0]  # libtpu told there is no TPU to guard: runs beside others
    n, heads, dim = 512, 4, 64
    x = jax.ShapeDtypeStruct((1, n, heads, dim), jnp.bfloat16, sharding=jax.sharding.SingleDeviceSharding(device))
    pattern, fused = P.strided(64), sys.argv[1] == "fused"
    loss = lambda q, k, v: attend(
        q, k, v, (pattern,), backend="pallas", block_size=128, fused_backward=fused
    ).astype(jnp.float32).sum()
    jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(x, x, x).compile()
    expected = [flash_tpu.grid_steps(c.layout, batch=1, heads=heads * c.fold, dim=dim, fused=fused)
                for c in backend_layout(pattern, n, backend="pallas", block_size=128).components]
    kernels = [{"name": k.name, "bounds": k.iteration_bounds, "steps": k.grid_steps, "transposes": k.transposes,
                "vxposes": k.vxposes, "original": k.original} for k in mosaic_dump.kernels(directory)]
    print(json.dumps({"kernels": kernels, "expected": expected}))
    """
)


def _python(code: str, *args: str, timeout: int = 900) -> str:
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "JAX_PLATFORMS": "cpu",
    }
    env.pop("LIBTPU_INIT_ARGS", None)
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def compiled():
    return json.loads(_python(COMPILE, "split").strip().splitlines()[-1])


@pytest.fixture(scope="module")
def compiled_fused():
    return json.loads(_python(COMPILE, "fused").strip().splitlines()[-1])


@pytest.mark.slow
def test_compiled_grids_are_one_step_per_active_block_and_head_group(compiled):
    """... and one row kernel for the backward's delta (rowsum(out * dout), shared by both components)."""
    delta = [k for k in compiled["kernels"] if k["name"] == "sparse_flash_delta"]
    assert len(delta) == 1 and delta[0]["steps"] == 512 // 512  # batch 1, 4 heads in one group, one block
    kernels = [k for k in compiled["kernels"] if k["name"] != "sparse_flash_delta"]
    assert sorted(k["name"] for k in kernels) == sorted(
        ["sparse_flash_fwd", "sparse_flash_dq", "sparse_flash_dkv"] * 2
    )
    for k in kernels:
        assert len(k["bounds"]) == 3 and k["bounds"][:2] == [1, 1]  # batch 1, the 4 heads in one group
    by_kind = sorted(k["steps"] for k in kernels)
    expected = sorted(s for comp in compiled["expected"] for s in comp.values())
    assert by_kind == expected


@pytest.mark.slow
def test_dkv_kernel_has_no_transposes(compiled):
    """s^T = k q^T keeps every matmul NN or NT: no tpu.transpose after vector layout, no transpose-unit
    instruction in the final program (the earlier a.T @ b form compiled to 2 and 32 of them)."""
    dkv = [k for k in compiled["kernels"] if k["name"] == "sparse_flash_dkv"]
    assert dkv and all(k["transposes"] == 0 and k["vxposes"] == 0 for k in dkv)
    assert all(k["vxposes"] == 0 for k in compiled["kernels"] if k["name"] == "sparse_flash_dq")
    fwd = [k for k in compiled["kernels"] if k["name"] == "sparse_flash_fwd"]
    assert fwd and all(
        k["vxposes"] > 0 for k in fwd
    )  # the forward's lse column -> row: the count does see them


@pytest.mark.slow
def test_row_statistics_are_lane_dense_rows(compiled):
    """lse / delta blocks are [heads, 1, 128] rows, never [..., 128, 1] columns padded to (8, 128) tiles."""
    for k in compiled["kernels"]:
        assert not re.search(r"memref<[0-9x]*x1xf32", k["original"]), k["name"]
        if k["name"] in ("sparse_flash_dq", "sparse_flash_dkv"):
            assert re.search(
                r"memref<1x4x1x128xf32, #tpu.memory_space<vmem>>", k["original"]
            )  # [batch, heads, 1, block]


@pytest.mark.slow
def test_fused_backward_compiles_to_one_kernel_and_drops_the_dq_pass(compiled, compiled_fused):
    kernels = [k for k in compiled_fused["kernels"] if k["name"] != "sparse_flash_delta"]
    assert sorted(k["name"] for k in kernels) == sorted(["sparse_flash_fwd", "sparse_flash_bwd_fused"] * 2)
    expected = sorted(s for comp in compiled_fused["expected"] for s in comp.values())
    assert sorted(k["steps"] for k in kernels) == expected
    split_steps = sum(k["steps"] for k in compiled["kernels"] if k["name"] != "sparse_flash_delta")
    dq_steps = sum(k["steps"] for k in compiled["kernels"] if k["name"] == "sparse_flash_dq")
    assert sum(k["steps"] for k in kernels) == split_steps - dq_steps
    # Its dq contribution ds^T k is the one transposed-LHS matmul: the transposes it costs are there.
    assert all(k["vxposes"] > 0 for k in kernels if k["name"] == "sparse_flash_bwd_fused")
