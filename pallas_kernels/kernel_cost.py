"""What a block-sparse kernel costs, counted from its layout, for `pl.CostEstimate`.

XLA cannot see inside a Pallas custom call, so without an estimate the compiled cost analysis (and the
scheduler) would count the attention as free. The count follows the kernels: every active block does
`matmuls` [block_q, block_k] x head_dim products and one exp per score; the blocks streamed through a
row's loop are read once per active block, the row's own arrays once.
"""

from __future__ import annotations

from jax.experimental import pallas as pl

from pallas_kernels.layouts import BlockLayout


def block_sparse_cost(
    layout: BlockLayout, *, programs: int, dim: int, itemsize: int, matmuls: int, streamed: int, resident: int,
    by_key_blocks: bool = False,
) -> pl.CostEstimate:
    """`programs` = batch x heads; `streamed` / `resident` = how many arrays of each kind the kernel
    reads or writes; rows are query blocks, or key blocks when `by_key_blocks` (the dk/dv pass)."""
    area = layout.block_q * layout.block_k
    if by_key_blocks:
        row_len, streamed_rows = layout.num_k_blocks * layout.block_k, layout.block_q
    else:
        row_len, streamed_rows = layout.num_q_blocks * layout.block_q, layout.block_k
    elements = layout.num_active * streamed * streamed_rows * dim + resident * row_len * dim
    return pl.CostEstimate(
        flops=programs * layout.num_active * matmuls * 2 * area * dim,
        transcendentals=programs * layout.num_active * area,
        bytes_accessed=programs * elements * itemsize,
    )


# A fixed cost per grid step of a Pallas TPU kernel (pipeline bookkeeping, DMA issue and wait), as commonly
# put for TPUs; the roofline below adds it for every step, so tiny steps cannot hide behind FLOPs.
TPU_STEP_US = 0.35
# Per chip: peak dense bf16 FLOP/s and HBM bandwidth in bytes/s (public figures).
TPU_CHIPS: dict[str, tuple[float, float]] = {
    "v4": (275e12, 1228e9),
    "v5e": (197e12, 819e9),
    "v5p": (459e12, 2765e9),
    "v6e": (918e12, 1640e9),
}


def chip_peaks(topology: str) -> tuple[float, float]:
    """(peak FLOP/s, HBM bytes/s) of one chip of a topology name such as 'v5p:2x2x1'."""
    generation = topology.split(":")[0].split("-")[0].lower()
    if generation not in TPU_CHIPS:
        raise ValueError(f"no peak figures for TPU generation {generation!r}; known: {', '.join(TPU_CHIPS)}")
    return TPU_CHIPS[generation]


def estimate_ms(flops: float, bytes_accessed: float, grid_steps: int, *, topology: str, step_us: float = TPU_STEP_US) -> float:
    """est_ms = max(FLOPs / peak, bytes / HBM bandwidth) + grid_steps x per-step cost, in milliseconds."""
    peak, bandwidth = chip_peaks(topology)
    return max(flops / peak, bytes_accessed / bandwidth) * 1e3 + grid_steps * step_us * 1e-3


def flash_fwd_bwd_cost(
    *, active_blocks: int, block_q: int, block_k: int, q_len: int, k_len: int, dim: int, programs: int, itemsize: int,
    forward_only: bool = False,
) -> tuple[float, float]:
    """(FLOPs, bytes) of a block-sparse flash forward + backward (forward, dq, dk/dv kernels, counted as
    block_sparse_cost counts ours) for kernels that declare no cost, e.g. JAX's splash attention."""
    area = block_q * block_k
    if forward_only:
        flops = programs * active_blocks * 2 * 2 * area * dim
        return float(flops), float(programs * (active_blocks * 2 * block_k + 2 * q_len) * dim * itemsize)
    flops = programs * active_blocks * (2 + 3 + 4) * 2 * area * dim
    streamed = active_blocks * (2 * block_k + 2 * block_k + 2 * block_q) * dim
    resident = (2 + 3) * q_len * dim + 4 * k_len * dim
    return float(flops), float(programs * (streamed + resident) * itemsize)
