"""What a block-sparse kernel costs, counted from its layout, for `pl.CostEstimate`.

XLA cannot see inside a Pallas custom call, so without an estimate the compiled cost analysis (and the
scheduler) would count the attention as free. The count follows the kernels: every active block does
`matmuls` [block_q, block_k] x head_dim products and one exp per score; the blocks streamed through a
row's loop are read once per active block, the row's own arrays once.
"""

from __future__ import annotations

from jax.experimental import pallas as pl

from pallas_kernels.block_layout import BlockLayout


def block_sparse_cost(
    layout: BlockLayout,
    *,
    programs: int,
    dim: int,
    itemsize: int,
    matmuls: int,
    streamed: int,
    resident: int,
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
