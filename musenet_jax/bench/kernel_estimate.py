"""What a flash-attention kernel that declares no cost (JAX's splash attention) costs, counted the way
`pallas_kernels.kernel_cost.block_sparse_cost` counts ours, for the attention benchmark."""

from __future__ import annotations


def flash_fwd_bwd_cost(
    *,
    active_blocks: int,
    block_q: int,
    block_k: int,
    q_len: int,
    k_len: int,
    dim: int,
    programs: int,
    itemsize: int,
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
