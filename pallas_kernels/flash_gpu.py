"""Block-sparse flash attention for GPU (Pallas, Triton lowering).

One program per (row block, batch, head): it reads its row of the block table and loops over just
those blocks (`fori_loop` with the row's count as bound), slicing key/value (forward, dq) or
query/output-gradient (dk/dv) blocks out of the head's whole sequence. Every block takes one code path (no
branch around the matmuls, so Triton can pipeline the loop): a full block's (mask id 0) mask is all True,
a partial block computes its mask from the positions its slots hold
(`BlockLayout.allowed` over a [block] vector of each side's positions, as JAX's flash kernel builds the
causal mask from iota) instead of loading a [block_q, block_k] mask from memory.
Blocks are at least 64 on both sides (the Pallas backend's layouts use 128) and powers of two
(sparse_flash.pallas_block_size refuses others in one line instead of a Triton lowering error).

Arrays are [batch, slots, heads, head_dim] as `attend` has them; head_dim must be a power of two >= 16
(the caller pads). Row statistics (lse, delta) are [batch, heads, slots]. Each kernel's num_warps and
num_stages come from triton_tuning's table, keyed by kernel, program tile, head_dim and dtype.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from pallas_kernels.block_layout import FULL_MASK_ID, MASKED_SCORE, BlockLayout
from pallas_kernels.kernel_cost import block_sparse_cost
from pallas_kernels.triton_tuning import KernelKind, TuneKey, lookup

_NT = (((1,), (1,)), ((), ()))  # a @ b.T
_TN = (((0,), (0,)), ((), ()))  # a.T @ b


MIN_BLOCK = 64
# The backward's own tile: a dq program owns this many query rows of a layout block, a dk/dv program this
# many keys, so its three float32 score-sized tiles (s, dp, ds) are [64, 128] rather than [128, 128]
# (Triton's own flash backward uses 32-64 rows); the layout's tables are still read per layout block.
BACKWARD_TILE = 64


def tune_keys(layout: BlockLayout, dim: int, dtype) -> dict[KernelKind, TuneKey]:
    """The triton_tuning key of each kernel on this layout: its program tile (the backward's own tiles,
    see BACKWARD_TILE), head_dim (padded) and dtype."""
    bq, bk, name = layout.block_q, layout.block_k, jnp.dtype(dtype).name
    return {
        "fwd": TuneKey("fwd", bq, bk, dim, name),
        "dq": TuneKey("dq", min(BACKWARD_TILE, bq), bk, dim, name),
        "dkv": TuneKey("dkv", bq, min(BACKWARD_TILE, bk), dim, name),
    }


def _params(key: TuneKey) -> plgpu.CompilerParams:
    """Triton compiler params from triton_tuning's table (without them Pallas on GPU would pick the Mosaic
    GPU lowering)."""
    warps, stages = lookup(key)
    return plgpu.CompilerParams(num_warps=warps, num_stages=stages)


def _check(layout: BlockLayout) -> None:
    for edge in (layout.block_q, layout.block_k):
        if edge < MIN_BLOCK or edge & (edge - 1):
            raise ValueError(
                f"the Triton kernels need power-of-two blocks >= {MIN_BLOCK}, "
                f"layout has {layout.block_q}x{layout.block_k}"
            )


def _masked(mids_ref, r, j, step, carry, mask):
    """`step(carry, allowed)` on one code path: a full block's mask is all True, a partial block's comes from
    its slots' positions. No branch around the matmuls (a `lax.cond` there keeps Triton from pipelining the
    loop); the price is an integer compare and a select per score on full blocks too."""
    return step(carry, mask() | (mids_ref[r, j] == FULL_MASK_ID))


def _position_mask(predicate, q_pos: jax.Array, k_pos: jax.Array) -> jax.Array:
    """[bq, bk] bool: the layout's predicate on the slots' positions; padding slots (-1) never allowed."""
    i, j = q_pos[:, None], k_pos[None, :]
    return (i >= 0) & (j >= 0) & predicate(i, j)


def _whole(x: jax.Array) -> pl.BlockSpec:
    """A table or mask stack passed whole; kernels read single entries."""
    return pl.BlockSpec(x.shape, lambda *_: (0,) * x.ndim)


def _tables(counts, indices, mask_ids) -> list[jax.Array]:
    """One direction's block tables (int32)."""
    return [jnp.asarray(t, jnp.int32) for t in (counts, indices, mask_ids)]


def _positions(layout: BlockLayout) -> list[jax.Array]:
    return [jnp.asarray(layout.q_positions, jnp.int32), jnp.asarray(layout.k_positions, jnp.int32)]


def _positions_block(block: int) -> pl.BlockSpec:
    """The positions of the program's own block of slots."""
    return pl.BlockSpec((block,), lambda r, b, h: (r,))


def _seq_spec(length: int, dim: int) -> pl.BlockSpec:
    """One head's whole sequence (blocks are sliced inside the kernel)."""
    return pl.BlockSpec((None, length, None, dim), lambda r, b, h: (b, 0, h, 0))


def _block_spec(block: int, dim: int) -> pl.BlockSpec:
    return pl.BlockSpec((None, block, None, dim), lambda r, b, h: (b, r, h, 0))


def _forward_kernel(
    counts_ref,
    idx_ref,
    mids_ref,
    qpos_ref,
    kpos_ref,
    q_ref,
    k_ref,
    v_ref,
    o_ref,
    lse_ref,
    *,
    bk: int,
    predicate,
):
    r = pl.program_id(0)
    q = q_ref[...]
    bq, dim = q.shape

    def body(j, carry):
        keys = pl.ds(pl.multiple_of(idx_ref[r, j] * bk, bk), bk)

        def mask():
            return _position_mask(predicate, qpos_ref[...], kpos_ref[keys])

        s = lax.dot_general(q, k_ref[keys, :], _NT, preferred_element_type=jnp.float32)
        v = v_ref[keys, :]

        def step(carry, allowed):
            acc, m_prev, l_prev = carry
            scores = jnp.where(allowed, s, MASKED_SCORE)
            m_next = jnp.maximum(m_prev, scores.max(axis=-1))
            alpha = jnp.exp(m_prev - m_next)
            p = jnp.where(allowed, jnp.exp(scores - m_next[:, None]), 0.0)
            acc = alpha[:, None] * acc + jnp.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)
            return acc, m_next, alpha * l_prev + p.sum(axis=-1)

        return _masked(mids_ref, r, j, step, carry, mask)

    init = (
        jnp.zeros((bq, dim), jnp.float32),
        jnp.full((bq,), -jnp.inf, jnp.float32),
        jnp.zeros((bq,), jnp.float32),
    )
    acc, m, l = lax.fori_loop(0, counts_ref[r], body, init)
    seen = l > 0
    safe = jnp.where(seen, l, 1.0)
    o_ref[...] = (acc / safe[:, None]).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(seen, m + jnp.log(safe), -jnp.inf)


def forward(q, k, v, layout: BlockLayout, *, interpret: bool) -> tuple[jax.Array, jax.Array]:
    """q [B, Lq, H, D] (already scaled), k/v [B, Lk, H, D] -> out [B, Lq, H, D], lse [B, H, Lq] f32."""
    batch, q_len, heads, dim = q.shape
    bq, k_len = layout.block_q, k.shape[1]
    _check(layout)
    tables = _tables(layout.kv_counts, layout.kv_indices, layout.kv_mask_ids)
    q_pos, k_pos = _positions(layout)
    return pl.pallas_call(
        functools.partial(_forward_kernel, bk=layout.block_k, predicate=layout.allowed),
        grid=(layout.num_q_blocks, batch, heads),
        in_specs=[
            *map(_whole, tables),
            _positions_block(bq),
            _whole(k_pos),
            _block_spec(bq, dim),
            _seq_spec(k_len, dim),
            _seq_spec(k_len, dim),
        ],
        out_specs=[_block_spec(bq, dim), pl.BlockSpec((None, None, bq), lambda r, b, h: (b, h, r))],
        out_shape=[
            jax.ShapeDtypeStruct(q.shape, q.dtype),
            jax.ShapeDtypeStruct((batch, heads, q_len), jnp.float32),
        ],
        compiler_params=_params(tune_keys(layout, dim, q.dtype)["fwd"]),
        cost_estimate=block_sparse_cost(
            layout,
            programs=batch * heads,
            dim=dim,
            itemsize=q.dtype.itemsize,
            matmuls=2,
            streamed=2,
            resident=2,
        ),
        interpret=interpret,
        name="sparse_flash_fwd",
    )(*tables, q_pos, k_pos, q, k, v)


def _dq_kernel(
    counts_ref,
    idx_ref,
    mids_ref,
    qpos_ref,
    kpos_ref,
    q_ref,
    k_ref,
    v_ref,
    do_ref,
    lse_ref,
    delta_ref,
    dq_ref,
    *,
    bk: int,
    split: int,
    predicate,
):
    r = lax.div(pl.program_id(0), split)  # the layout block this program's tile of query rows lies in
    q, do = q_ref[...], do_ref[...]
    lse, delta = lse_ref[...][:, None], delta_ref[...][:, None]

    def body(j, dq):
        keys = pl.ds(pl.multiple_of(idx_ref[r, j] * bk, bk), bk)

        def mask():
            return _position_mask(predicate, qpos_ref[...], kpos_ref[keys])

        k = k_ref[keys, :]
        s = lax.dot_general(q, k, _NT, preferred_element_type=jnp.float32)
        dp = lax.dot_general(do, v_ref[keys, :], _NT, preferred_element_type=jnp.float32)

        def step(dq, allowed):
            p = jnp.where(allowed, jnp.exp(s - lse), 0.0)
            ds = p * (dp - delta)
            return dq + jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)

        return _masked(mids_ref, r, j, step, dq, mask)

    dq = lax.fori_loop(0, counts_ref[r], body, jnp.zeros(q.shape, jnp.float32))
    dq_ref[...] = dq.astype(dq_ref.dtype)


def _dkv_kernel(
    counts_ref,
    idx_ref,
    mids_ref,
    qpos_ref,
    kpos_ref,
    q_ref,
    k_ref,
    v_ref,
    do_ref,
    lse_ref,
    delta_ref,
    dk_ref,
    dv_ref,
    *,
    bq: int,
    split: int,
    predicate,
):
    c = lax.div(pl.program_id(0), split)  # the layout block this program's tile of keys lies in
    k, v = k_ref[...], v_ref[...]

    def body(i, carry):
        rows = pl.ds(pl.multiple_of(idx_ref[c, i] * bq, bq), bq)

        def mask():
            return _position_mask(predicate, qpos_ref[rows], kpos_ref[...])

        q, do = q_ref[rows, :], do_ref[rows, :]
        s = lax.dot_general(q, k, _NT, preferred_element_type=jnp.float32)
        dp = lax.dot_general(do, v, _NT, preferred_element_type=jnp.float32)
        lse, delta = lse_ref[rows][:, None], delta_ref[rows][:, None]

        def step(carry, allowed):
            dk, dv = carry
            p = jnp.where(allowed, jnp.exp(s - lse), 0.0)  # [bq, bk]
            dv = dv + lax.dot_general(p.astype(do.dtype), do, _TN, preferred_element_type=jnp.float32)
            ds = p * (dp - delta)
            dk = dk + lax.dot_general(ds.astype(q.dtype), q, _TN, preferred_element_type=jnp.float32)
            return dk, dv

        return _masked(mids_ref, c, i, step, carry, mask)

    zeros = jnp.zeros(k.shape, jnp.float32)
    dk, dv = lax.fori_loop(0, counts_ref[c], body, (zeros, zeros))
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def backward(
    q, k, v, do, lse, delta, layout: BlockLayout, *, interpret: bool
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """dq, dk, dv given lse and delta [B, H, Lq] (delta = rowsum(out * dout) - dlse; lse finite)."""
    batch, q_len, heads, dim = q.shape
    bq, bk, k_len = layout.block_q, layout.block_k, k.shape[1]
    _check(layout)
    keys = tune_keys(layout, dim, q.dtype)
    tq, tk = keys["dq"].block_q, keys["dkv"].block_k  # each program's own tile (see BACKWARD_TILE)
    itemsize = q.dtype.itemsize
    stat_block = pl.BlockSpec((None, None, tq), lambda r, b, h: (b, h, r))
    stat_whole = pl.BlockSpec((None, None, q_len), lambda r, b, h: (b, h, 0))

    q_pos, k_pos = _positions(layout)
    row_tables = _tables(layout.kv_counts, layout.kv_indices, layout.kv_mask_ids)
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, bk=bk, split=bq // tq, predicate=layout.allowed),
        grid=(layout.num_q_blocks * (bq // tq), batch, heads),
        in_specs=[
            *map(_whole, row_tables),
            _positions_block(tq),
            _whole(k_pos),
            _block_spec(tq, dim),
            _seq_spec(k_len, dim),
            _seq_spec(k_len, dim),
            _block_spec(tq, dim),
            stat_block,
            stat_block,
        ],
        out_specs=_block_spec(tq, dim),
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=_params(keys["dq"]),
        cost_estimate=block_sparse_cost(
            layout, programs=batch * heads, dim=dim, itemsize=itemsize, matmuls=3, streamed=2, resident=3
        ),
        interpret=interpret,
        name="sparse_flash_dq",
    )(*row_tables, q_pos, k_pos, q, k, v, do, lse, delta)

    column_tables = _tables(layout.q_counts, layout.q_indices, layout.q_mask_ids)
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, bq=bq, split=bk // tk, predicate=layout.allowed),
        grid=(layout.num_k_blocks * (bk // tk), batch, heads),
        in_specs=[
            *map(_whole, column_tables),
            _whole(q_pos),
            _positions_block(tk),
            _seq_spec(q_len, dim),
            _block_spec(tk, dim),
            _block_spec(tk, dim),
            _seq_spec(q_len, dim),
            stat_whole,
            stat_whole,
        ],
        out_specs=[_block_spec(tk, dim), _block_spec(tk, dim)],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        compiler_params=_params(keys["dkv"]),
        cost_estimate=block_sparse_cost(
            layout,
            programs=batch * heads,
            dim=dim,
            itemsize=itemsize,
            matmuls=4,
            streamed=2,
            resident=4,
            by_key_blocks=True,
        ),
        interpret=interpret,
        name="sparse_flash_dkv",
    )(*column_tables, q_pos, k_pos, q, k, v, do, lse, delta)
    return dq, dk, dv
