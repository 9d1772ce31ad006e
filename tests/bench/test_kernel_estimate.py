"""The attention benchmark's estimate reads what the compiler produced: vector ops per grid step from a
Mosaic kernel's final low-level program (loops multiplied out, one branch per step), declared kernel costs
from the compiled HLO, and a time that adds kernels and glue."""

import pytest

from musenet_jax.bench import kernel_estimate as est

# The shape of libtpu's finalize-llo dump: a kernel function whose body has straight-line ops, a loop with
# constant bounds and top-level conditional regions (init / full block / partial block), then the index
# map functions.
LLO = """module attributes {stable_mosaic.version = 15 : i64} {
  func.func @kernel(%arg0: i32 {llo.type = i32}) attributes {iteration_bounds = array<i64: 1, 2, 8>} {
    %c0 = llo.constant {value = 0 : i32} : i32
    %c3 = llo.constant {value = 3 : i32} : i32
    %c1 = llo.constant {value = 1 : i32} : i32
    %0 = llo.vector_load %arg0 : vector<8x128xf32>
    %1 = llo.vadd.f32 %0, %0 : vector<8x128xf32>
    %2 = llo.vbitcast %1 : vector<8x128xf32>
    scf.for %i = %c0 to %c3 step %c1  : i32 {
      %3 = llo.vmul.f32 %1, %1 : vector<8x128xf32>
      %4 = llo.vexp.f32 %3 : vector<8x128xf32>
    } {attr = 1}
    scf.if %a {
      %5 = llo.vsub.f32 %1, %1 : vector<8x128xf32>
    } {in_layout = [#tpu.vpad<"none">]}
    scf.if %b {
      %6 = llo.vmax.f32 %1, %1 : vector<8x128xf32>
      %7 = llo.vselect %6, %1, %1 : vector<8x128xf32>
      %8 = llo.vmatmul %7 : vector<8x128xf32>
      scf.if %c {
        %9 = llo.vadd.f32 %1, %1 : vector<8x128xf32>
      } else {
        %10 = llo.vadd.f32 %1, %1 : vector<8x128xf32>
        %11 = llo.vadd.f32 %1, %1 : vector<8x128xf32>
      }
    } {in_layout = [#tpu.vpad<"none">]}
    llo.vector_store %1 into %arg0 : vector<8x128xf32> into i32
  }
  func.func @transform_0(%arg0: i32) -> (i32) {
    %0 = llo.vadd.f32 %arg0, %arg0 : vector<8x128xf32>
    return %arg0 : i32
  }
}
"""


def test_vector_ops_per_step_multiplies_loops_and_takes_one_branch():
    # vadd 1 + loop 3 x (vmul, vexp) + the heavier region (vmax, vselect, the else side's 2 vadds);
    # loads, stores, bitcasts and matmuls use other units; the index map is not the kernel.
    assert est.vector_ops_per_step(LLO) == 1 + 3 * 2 + 4


HLO = (
    '  %sparse_flash_fwd.3 = (bf16[1,4,512,64]) custom-call(%a), custom_call_target="tpu_custom_call", '
    'backend_config={"cost_estimate":{"flops":"100","transcendentals":"7","bytes_accessed":"40",'
    '"remote_bytes_transferred":"0"}}\n'
    '  %sparse_flash_fwd.2 = (bf16[1,4,512,64]) custom-call(%b), custom_call_target="tpu_custom_call", '
    'backend_config={"cost_estimate":{"flops":"50","transcendentals":"7","bytes_accessed":"10",'
    '"remote_bytes_transferred":"0"}}\n'
    '  %splash_mha_fwd.1 = (bf16[4,512,64]) custom-call(%c), custom_call_target="tpu_custom_call", '
    'backend_config={"custom_call_config":{}}\n'
    '  %custom-call.3 = s32[1024] custom-call(%p), custom_call_target="AssumeGatherIndicesInBound"\n'
)


def test_declared_costs_are_summed_per_kernel_name_and_undeclared_kernels_are_left_out():
    assert est.declared_kernel_costs(HLO) == {"sparse_flash_fwd": (150.0, 50.0)}


def test_kernel_time_takes_the_binding_unit_and_adds_grid_steps():
    peak_flops, bandwidth = 459e12, 2765e9
    vector_bound = est.KernelCost("k", flops=1e9, nbytes=1e6, grid_steps=100, vector_ops=1e9)
    assert vector_bound.ms("v5p:2x2x1") == pytest.approx(1e9 / est.VECTOR_OPS_PER_S * 1e3 + 100 * 0.35e-3)
    bytes_bound = est.KernelCost("k", flops=1e9, nbytes=1e9, grid_steps=0, vector_ops=0)
    assert bytes_bound.ms("v5p:2x2x1") == pytest.approx(1e9 / bandwidth * 1e3)
    assert est.glue_ms(1e12, 1e6, "v5p:2x2x1") == pytest.approx(1e12 / peak_flops * 1e3)


def test_splash_costs_split_by_kernel_add_up_to_nine_block_matmuls():
    costs = est.splash_kernel_costs(
        active_blocks=10, block_q=128, block_k=256, q_len=1024, k_len=1024, dim=64, programs=2, itemsize=2
    )
    assert set(costs) == {"fwd", "dq", "dkv"}
    assert sum(f for f, _ in costs.values()) == 2 * 10 * 9 * 2 * 128 * 256 * 64
    assert costs["fwd"][1] == 2 * (10 * 2 * 256 + 2 * 1024) * 64 * 2
    assert est.splash_grid_steps(1024, heads=2, batch=1, block_q=128, block_kv=256) == 3 * 2 * 8 * 4
    # a component with fewer keys than queries (fixed's summary part)
    assert est.splash_grid_steps(1024, 2, 1, 128, 256, kv_seq=512) == 3 * 2 * 8 * 2
