"""Block-sparse flash attention for TPU (Pallas Mosaic): block tables as scalar-prefetch operands.

The grid is (batch, heads, row block, table column). Scalar prefetch hands the kernels the padded
per-row tables of a `BlockLayout`; BlockSpec index maps read them to DMA only the active key blocks
(forward, dq) or query blocks (dk/dv). Table columns past a row's count repeat the last block index,
so Pallas fetches nothing new, and the kernel body is skipped by `pl.when`. Partial blocks fetch their
[block_q, block_k] mask; full blocks re-use the last fetched mask block (no DMA) and ignore it.

Arrays here are [batch, heads, slots, head_dim]; row statistics (lse, delta) are [batch, heads, slots, 1].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.kernel_cost import block_sparse_cost
from pallas_kernels.block_layout import FULL_MASK_ID, MASKED_SCORE, BlockLayout

_NT = (((1,), (1,)), ((), ()))  # a @ b.T
_TN = (((0,), (0,)), ((), ()))  # a.T @ b
_SEMANTICS = ("parallel", "parallel", "parallel", "arbitrary")


def _mask_fetch_ids(mask_ids: np.ndarray) -> np.ndarray:
    """Which mask block each grid step DMAs: its own if partial, else the last partial one (no new fetch)."""
    flat = mask_ids.reshape(-1)
    last_partial = np.maximum.accumulate(np.where(flat != FULL_MASK_ID, np.arange(flat.size), -1))
    fetch = np.where(last_partial >= 0, flat[np.maximum(last_partial, 0)], FULL_MASK_ID)
    return fetch.reshape(mask_ids.shape).astype(np.int32)


def _row_tables(layout: BlockLayout) -> tuple[jax.Array, ...]:
    """Forward / dq tables: per query block, its active key blocks."""
    tables = (layout.kv_counts, layout.kv_indices, layout.kv_mask_ids, _mask_fetch_ids(layout.kv_mask_ids))
    return tuple(jnp.asarray(t, jnp.int32) for t in tables)


def _column_tables(layout: BlockLayout) -> tuple[jax.Array, ...]:
    """dk/dv tables: per key block, its active query blocks."""
    tables = (layout.q_counts, layout.q_indices, layout.q_mask_ids, _mask_fetch_ids(layout.q_mask_ids))
    return tuple(jnp.asarray(t, jnp.int32) for t in tables)


def _allowed(mask_ref, mask_id) -> jax.Array:
    """In-block mask of this step; a full block ignores whatever mask block happens to be resident."""
    return (mask_ref[...] != 0) | (mask_id == FULL_MASK_ID)


def _specs(layout: BlockLayout, dim: int):
    """BlockSpecs shared by the kernels: `own` follows the grid's row block, `table` the table entry."""
    bq, bk = layout.block_q, layout.block_k

    def own(block):
        return pl.BlockSpec((None, None, block, dim), lambda b, h, r, j, *_: (b, h, r, 0))

    def table(block, width=dim):
        return pl.BlockSpec((None, None, block, width), lambda b, h, r, j, counts, idx, *_: (b, h, idx[r, j], 0))

    def stat_own(block):
        return pl.BlockSpec((None, None, block, 1), lambda b, h, r, j, *_: (b, h, r, 0))

    mask = pl.BlockSpec((None, bq, bk), lambda b, h, r, j, counts, idx, mids, fetch: (fetch[r, j], 0, 0))
    return own, table, stat_own, mask


def _forward_kernel(counts, idx, mids, fetch, q_ref, k_ref, v_ref, mask_ref, o_ref, lse_ref, m_s, l_s, acc_s):
    r, j = pl.program_id(2), pl.program_id(3)

    @pl.when(j == 0)
    def _init():
        m_s[...] = jnp.full_like(m_s, -jnp.inf)
        l_s[...] = jnp.zeros_like(l_s)
        acc_s[...] = jnp.zeros_like(acc_s)

    @pl.when(j < counts[r])
    def _step():
        allowed = _allowed(mask_ref, mids[r, j])
        s = lax.dot_general(q_ref[...], k_ref[...], _NT, preferred_element_type=jnp.float32)
        s = jnp.where(allowed, s, MASKED_SCORE)
        m_prev = m_s[...]
        m_next = jnp.maximum(m_prev, s.max(axis=-1, keepdims=True))
        alpha = jnp.exp(m_prev - m_next)
        p = jnp.where(allowed, jnp.exp(s - m_next), 0.0)
        l_s[...] = alpha * l_s[...] + p.sum(axis=-1, keepdims=True)
        v = v_ref[...]
        acc_s[...] = alpha * acc_s[...] + jnp.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)
        m_s[...] = m_next

    @pl.when(j == pl.num_programs(3) - 1)
    def _finish():
        l = l_s[...]
        seen = l > 0
        safe = jnp.where(seen, l, 1.0)
        o_ref[...] = (acc_s[...] / safe).astype(o_ref.dtype)
        lse_ref[...] = jnp.where(seen, m_s[...] + jnp.log(safe), -jnp.inf)


def forward(q, k, v, layout: BlockLayout, *, interpret: bool) -> tuple[jax.Array, jax.Array]:
    """q [B, H, Lq, D] (already scaled), k/v [B, H, Lk, D] -> out [B, H, Lq, D], lse [B, H, Lq, 1] f32."""
    batch, heads, q_len, dim = q.shape
    bq = layout.block_q
    own, table, stat_own, mask = _specs(layout, dim)
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=4,
        grid=(batch, heads, layout.num_q_blocks, layout.kv_indices.shape[1]),
        in_specs=[own(bq), table(layout.block_k), table(layout.block_k), mask],
        out_specs=[own(bq), stat_own(bq)],
        scratch_shapes=[pltpu.VMEM((bq, 1), jnp.float32), pltpu.VMEM((bq, 1), jnp.float32), pltpu.VMEM((bq, dim), jnp.float32)],
    )
    return pl.pallas_call(
        _forward_kernel,
        grid_spec=grid_spec,
        out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((batch, heads, q_len, 1), jnp.float32)],
        compiler_params=pltpu.CompilerParams(dimension_semantics=_SEMANTICS),
        cost_estimate=block_sparse_cost(layout, programs=batch * heads, dim=dim, itemsize=q.dtype.itemsize, matmuls=2, streamed=2, resident=2),
        interpret=interpret,
        name="sparse_flash_fwd",
    )(*_row_tables(layout), q, k, v, _int_masks(layout))


def _dq_kernel(counts, idx, mids, fetch, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, mask_ref, dq_ref, dq_s):
    r, j = pl.program_id(2), pl.program_id(3)

    @pl.when(j == 0)
    def _init():
        dq_s[...] = jnp.zeros_like(dq_s)

    @pl.when(j < counts[r])
    def _step():
        allowed = _allowed(mask_ref, mids[r, j])
        k, v = k_ref[...], v_ref[...]
        s = lax.dot_general(q_ref[...], k, _NT, preferred_element_type=jnp.float32)
        p = jnp.where(allowed, jnp.exp(s - lse_ref[...]), 0.0)
        dp = lax.dot_general(do_ref[...], v, _NT, preferred_element_type=jnp.float32)
        ds = p * (dp - delta_ref[...])
        dq_s[...] += jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)

    @pl.when(j == pl.num_programs(3) - 1)
    def _finish():
        dq_ref[...] = dq_s[...].astype(dq_ref.dtype)


def _dkv_kernel(counts, idx, mids, fetch, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, mask_ref, dk_ref, dv_ref, dk_s, dv_s):
    c, i = pl.program_id(2), pl.program_id(3)

    @pl.when(i == 0)
    def _init():
        dk_s[...] = jnp.zeros_like(dk_s)
        dv_s[...] = jnp.zeros_like(dv_s)

    @pl.when(i < counts[c])
    def _step():
        allowed = _allowed(mask_ref, mids[c, i])
        q, do = q_ref[...], do_ref[...]
        s = lax.dot_general(q, k_ref[...], _NT, preferred_element_type=jnp.float32)
        p = jnp.where(allowed, jnp.exp(s - lse_ref[...]), 0.0)  # [bq, bk]
        dv_s[...] += lax.dot_general(p.astype(do.dtype), do, _TN, preferred_element_type=jnp.float32)
        dp = lax.dot_general(do, v_ref[...], _NT, preferred_element_type=jnp.float32)
        ds = p * (dp - delta_ref[...])
        dk_s[...] += lax.dot_general(ds.astype(q.dtype), q, _TN, preferred_element_type=jnp.float32)

    @pl.when(i == pl.num_programs(3) - 1)
    def _finish():
        dk_ref[...] = dk_s[...].astype(dk_ref.dtype)
        dv_ref[...] = dv_s[...].astype(dv_ref.dtype)


def backward(q, k, v, do, lse, delta, layout: BlockLayout, *, interpret: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    """dq, dk, dv given lse and delta [B, H, Lq, 1] (delta = rowsum(out * dout) - dlse; lse finite)."""
    batch, heads, _, dim = q.shape
    bq, bk = layout.block_q, layout.block_k
    own, table, stat_own, mask = _specs(layout, dim)
    masks = _int_masks(layout)
    params, itemsize = pltpu.CompilerParams(dimension_semantics=_SEMANTICS), q.dtype.itemsize

    dq = pl.pallas_call(
        _dq_kernel,
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=4,
            grid=(batch, heads, layout.num_q_blocks, layout.kv_indices.shape[1]),
            in_specs=[own(bq), table(bk), table(bk), own(bq), stat_own(bq), stat_own(bq), mask],
            out_specs=own(bq),
            scratch_shapes=[pltpu.VMEM((bq, dim), jnp.float32)],
        ),
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=params,
        cost_estimate=block_sparse_cost(layout, programs=batch * heads, dim=dim, itemsize=itemsize, matmuls=3, streamed=2, resident=3),
        interpret=interpret,
        name="sparse_flash_dq",
    )(*_row_tables(layout), q, k, v, do, lse, delta, masks)

    def stat_table(block):
        return table(block, width=1)

    dk, dv = pl.pallas_call(
        _dkv_kernel,
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=4,
            grid=(batch, heads, layout.num_k_blocks, layout.q_indices.shape[1]),
            in_specs=[table(bq), own(bk), own(bk), table(bq), stat_table(bq), stat_table(bq), mask],
            out_specs=[own(bk), own(bk)],
            scratch_shapes=[pltpu.VMEM((bk, dim), jnp.float32), pltpu.VMEM((bk, dim), jnp.float32)],
        ),
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        compiler_params=params,
        cost_estimate=block_sparse_cost(
            layout, programs=batch * heads, dim=dim, itemsize=itemsize, matmuls=4, streamed=2, resident=4, by_key_blocks=True
        ),
        interpret=interpret,
        name="sparse_flash_dkv",
    )(*_column_tables(layout), q, k, v, do, lse, delta, masks)
    return dq, dk, dv


def _int_masks(layout: BlockLayout) -> jax.Array:
    """In-block masks as int32 (Mosaic has no boolean memory operands)."""
    return jnp.asarray(layout.masks.astype(np.int32))
