"""Glue means the same for every backend of `bench attention --topology`: the bytes of the XLA ops outside
the Mosaic kernels. XLA's cost analysis counts a kernel by the cost it declares and one that declares none
(JAX's splash) as nothing, so the program's bytes less the declared ones are the non-kernel ops' alone, and
hlo_glue's per-op count of those ops (at their tiled HBM size) adds up to it."""

import functools

import pytest

from musenet_jax.bench import hlo_glue

# A kernel whose attribute spans lines, closed by "}}" lines, as splash's kernel_metadata is; the op after
# it is glue all the same.
HLO = """HloModule m

ENTRY %main.1 (p.1: bf16[4,1024,64]) -> bf16[4,1024,64] {
  %p.1 = bf16[4,1024,64]{1,2,0:T(8,128)(2,1)} parameter(0)
  %copy = bf16[4,1024,64]{2,1,0:T(8,128)(2,1)} copy(%p.1)
  %kernel.1 = bf16[4,1024,64]{2,1,0:T(8,128)(2,1)} custom-call(%copy), \
custom_call_target="tpu_custom_call", frontend_attributes={kernel_metadata={
"xprof_metadata":"{}"
}}, backend_config={"custom_call_config":{}}
  ROOT %copy.1 = bf16[4,1024,64]{1,2,0:T(8,128)(2,1)} copy(%kernel.1)
}
"""


def test_glue_counts_tiled_bytes_of_every_op_outside_the_kernels():
    # 64 lanes stored in 128 where head_dim is minor, none where the 1024-long axis is
    unpadded, padded = 4 * 1024 * 64 * 2, 4 * 1024 * 128 * 2
    assert hlo_glue.glue_by_kind(HLO)["relayout"] == pytest.approx(2 * (unpadded + padded) / 1e9)
    assert hlo_glue._bytes("f32[]{:T(128)}") == 128 * 4
    assert hlo_glue._bytes("s8[1,4,4]{2,1,0:T(4,128)(4,1)}") == 4 * 128


def _v5p():
    from musenet_jax.train.compile import topology_devices

    return topology_devices("v5p:2x2x1")[0]


@pytest.mark.slow
def test_xla_counts_a_kernel_without_declared_cost_as_nothing():
    """If XLA ever counted an undeclared kernel's bytes itself, the bench would count splash's twice (once
    from its masks, once inside the glue): this fails first."""
    import jax
    import jax.numpy as jnp
    from jax.experimental import pallas as pl

    x = jax.ShapeDtypeStruct((1024, 256), jnp.float32, sharding=jax.sharding.SingleDeviceSharding(_v5p()))

    def double(a_ref, o_ref):
        o_ref[...] = a_ref[...] * 2

    def program(a, cost):
        block = pl.BlockSpec((128, 256), lambda i: (i, 0))
        kernel = pl.pallas_call(
            double,
            out_shape=jax.ShapeDtypeStruct(a.shape, a.dtype),
            grid=(8,),
            in_specs=[block],
            out_specs=block,
            cost_estimate=cost,
        )
        return kernel(a + 1) + 1

    def compiled(cost):
        return jax.jit(functools.partial(program, cost=cost)).lower(x).compile()

    undeclared = compiled(None)
    declared = compiled(pl.CostEstimate(flops=7, transcendentals=0, bytes_accessed=12345))
    nbytes = undeclared.cost_analysis()["bytes accessed"]
    assert declared.cost_analysis()["bytes accessed"] == nbytes + 12345
    assert declared.cost_analysis()["flops"] == undeclared.cost_analysis()["flops"] + 7
    # what is left is the two elementwise ops around the kernel, 1 MiB read and 1 MiB written each
    assert nbytes == 4 * 1024 * 256 * 4
    assert sum(hlo_glue.glue_by_kind(undeclared.as_text()).values()) * 1e9 == pytest.approx(nbytes)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["pallas", "jax_splash"])
def test_glue_is_the_bytes_of_the_ops_outside_the_kernels(backend):
    """A bench row's glue (XLA's whole-program bytes less the kernels' declared cost) is its non-kernel
    ops' bytes, for our declared kernels and splash's undeclared ones alike (kernel bytes of splash come
    from the Mosaic dump: tests/bench/test_bench_attention.py). At this shape every op outside the kernels
    reads its operands whole (no gather, no fusion slicing heads apart), which hlo_glue counts as XLA does."""
    import argparse

    from musenet_jax.attention.patterns import by_name
    from musenet_jax.bench import attention

    parser = argparse.ArgumentParser()
    attention.add_arguments(parser)
    args = parser.parse_args(["--heads", "8", "--stride", "32", "--dtype", "bfloat16"])
    blocks = ((512, 512, 512),) if backend == "jax_splash" else None
    row = attention._compiled_cost(
        args, by_name("strided", stride=32, summary=8), 1024, backend, _v5p(), "v5p:2x2x1", None, blocks
    )
    assert row["glue_gbytes_by_kind"]["gather"] == 0.0
    glue = sum(row["glue_gbytes_by_kind"].values())
    assert row["glue_gbytes"] == pytest.approx(glue, rel=1e-3)
    assert row["fwd_bwd_gbytes"] == pytest.approx(row["kernel_gbytes"] + row["glue_gbytes"])
    if backend == "pallas":
        assert row["kernel_gbytes"] > 0
