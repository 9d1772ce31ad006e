"""Block-sparse attention in plain XLA: computes only the active blocks of a layout component.

Every active block of the flat list is one small batched matmul; row statistics are reduced over the
blocks of a query block with sorted segment ops. Memory and FLOPs grow with the active blocks, not n^2,
and autodiff gives the backward pass. Same contract as a Pallas component kernel (see
pallas_kernels/block_layout.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from pallas_kernels.block_layout import MASKED_SCORE, BlockLayout


def _blocks(x: jax.Array, block: int) -> jax.Array:
    """[B, L, H, D] -> [L / block, B, H, block, D]: block index leading, for gathers and segment sums."""
    b, length, h, d = x.shape
    return x.reshape(b, length // block, block, h, d).transpose(1, 0, 3, 2, 4)


def blocksparse_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, layout: BlockLayout
) -> tuple[jax.Array, jax.Array]:
    """Attention over the active blocks of `layout`, in slot order.

    q [B, num_q_blocks * block_q, H, D] already scaled; k, v [B, num_k_blocks * block_k, H, D].
    Returns out [B, Lq, H, D] float32 (normalized; 0 on rows with no allowed key) and
    lse [B, Lq, H] float32 (log-sum-exp of the scores; -inf on rows with no allowed key).
    """
    batch, q_len, heads, dim = q.shape
    nqb = layout.num_q_blocks
    q_ids = jnp.asarray(layout.q_block_ids)
    k_ids = jnp.asarray(layout.k_block_ids)
    mask = jnp.asarray(layout.masks)[jnp.asarray(layout.mask_ids)][:, None, None]  # [A, 1, 1, bq, bk]

    scores = jnp.einsum(
        "abhqd,abhkd->abhqk",
        _blocks(q, layout.block_q)[q_ids],
        _blocks(k, layout.block_k)[k_ids],
        preferred_element_type=jnp.float32,
    )
    scores = jnp.where(mask, scores, MASKED_SCORE)
    row_max = jax.ops.segment_max(scores.max(-1), q_ids, num_segments=nqb, indices_are_sorted=True)
    row_max = lax.stop_gradient(row_max)  # softmax is shift-invariant: no gradient through the shift
    probs = jnp.where(mask, jnp.exp(scores - row_max[q_ids][..., None]), 0.0)
    denom = jax.ops.segment_sum(probs.sum(-1), q_ids, num_segments=nqb, indices_are_sorted=True)
    numer = jax.ops.segment_sum(
        jnp.einsum(
            "abhqk,abhkd->abhqd",
            probs.astype(v.dtype),
            _blocks(v, layout.block_k)[k_ids],
            preferred_element_type=jnp.float32,
        ),
        q_ids,
        num_segments=nqb,
        indices_are_sorted=True,
    )
    seen = denom > 0
    safe_denom = jnp.where(seen, denom, 1.0)  # double where: no inf/NaN in the gradient of empty rows
    out = numer / safe_denom[..., None]
    lse = jnp.where(seen, row_max + jnp.log(safe_denom), -jnp.inf)
    out = out.transpose(1, 0, 3, 2, 4).reshape(batch, q_len, heads, dim)
    lse = lse.transpose(1, 0, 3, 2).reshape(batch, q_len, heads)
    return out, lse
