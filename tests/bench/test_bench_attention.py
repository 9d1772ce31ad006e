"""`bench attention --topology` against JAX's splash attention: splash runs at the best block sizes of a
sweep, and its row says which (every BlockSizes field), so the comparison can be checked from the JSON; so
does splash on our layout's components (`jax_splash_components`, one BlockSizes per component)."""

import dataclasses
import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_splash_row_carries_its_swept_block_sizes():
    """A process of its own: the bench turns libtpu's kernel dump on before the compiler starts, which an
    earlier in-process TPU compile (another test on the same worker) would already have started."""
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    from musenet_jax.bench import attention

    argv = ["--seq", "512", "--pattern", "fixed", "--heads", "2", "--dtype", "bfloat16"]
    argv += ["--topology", "v5p:2x2x1", "--backends", "pallas,jax_splash,jax_splash_components", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "musenet_jax.cli.main", "bench", "attention", *argv],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    pallas, splash_row, components = rows
    blocks = splash_row["block_sizes"]
    assert set(blocks) == {f.name for f in dataclasses.fields(splash.BlockSizes)}
    assert {blocks["block_q"], blocks["block_kv"], blocks["block_kv_compute"]} <= {128, 256, 512}
    assert blocks["block_q_dkv"] == blocks["block_q"] and blocks["block_kv_dq"] == blocks["block_kv"]
    sweep = splash_row["sweep"]
    assert sweep["configurations"] == 3 * (1 + 2 + 3)  # (block_q, block_kv, block_kv_compute <= block_kv)
    assert 1 <= len(sweep["compiled"]) <= attention.SPLASH_COMPILED
    assert splash_row["est_ms"] == min(ms for _, ms in sweep["compiled"])
    assert any(name.startswith("splash_mha_fwd") for name in splash_row["kernels"])
    # splash on our components: one BlockSizes per component, each from its own sweep (the summary part's
    # 128 keys admit one key edge)
    assert set(components["block_sizes"]) == {"block", "summary"}
    for part_blocks in components["block_sizes"].values():
        assert set(part_blocks) == set(blocks)
    assert components["block_sizes"]["summary"]["block_kv"] == 128
    assert components["sweep"]["configurations"] == 3 * (1 + 2 + 3) + 3
    assert components["est_ms"] == min(ms for _, ms in components["sweep"]["compiled"])
    assert any(name.startswith("splash_mha_fwd_residuals") for name in components["kernels"])
    for row in (pallas, splash_row, components):
        assert row["est_ms"] == pytest.approx(row["kernel_ms"] + row["glue_ms"]) and row["code_mbytes"] > 0
        assert row["fwd_bwd_gbytes"] == pytest.approx(row["kernel_gbytes"] + row["glue_gbytes"])
    assert pallas["est_ms_ratio_vs_jax_splash"] == pytest.approx(pallas["est_ms"] / splash_row["est_ms"])


@pytest.mark.slow
def test_blocks_that_overflow_the_cores_vmem_are_one_line_not_a_traceback():
    """fixed(128, 32) at n = 8192 with blocks of 512 and 24 heads of 64 asks Mosaic for 16.7 MB of the core's
    16 MB scoped VMEM: the bench says so and what to change."""
    argv = ["--seq", "8192", "--pattern", "fixed", "--heads", "24", "--head-dim", "64", "--block-size", "512"]
    argv += ["--dtype", "bfloat16", "--topology", "v5p:2x2x1", "--backends", "pallas"]
    done = subprocess.run(
        [sys.executable, "-m", "musenet_jax.cli.main", "bench", "attention", *argv],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("musenet-jax bench: error:")]
    assert "blocks of 512" in line and "scoped VMEM" in line and line.endswith("use a smaller --block-size")
