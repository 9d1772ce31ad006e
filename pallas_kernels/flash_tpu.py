"""Block-sparse flash attention for TPU (Pallas Mosaic), shaped for the hardware.

Grid: (batch, head group, step). A step is one active block of the layout; the steps of a pass are the
layout's active blocks flattened into one sorted list (splash-attention style), so there are no padded
table columns to skip and the number of grid steps equals the number of active blocks (plus one step
for a row with no active block, which still has to write its zeros). Each step processes `hb` heads
(a head group: heads share the layout), so one step carries hb x [block_q, block_k] scores instead of
one; the per-step overhead (~0.35 us) is paid once per group. The heads of a step run in a `fori_loop`
unrolled HEAD_UNROLL at a time, so the compiled code does not grow with hb.

Scalar-prefetch tables are four flat int32 vectors of length `steps`:
  rows[s]   the block whose output the step accumulates (query block; key block in the dk/dv pass),
  cols[s]   the streamed block (key block; query block in the dk/dv pass),
  kinds[s]  (mask id + 1) * 4 + flags: mask id -1 = empty row (no work), 0 = full block, >= 1 partial;
            flags bit 0 = first step of its row (init), bit 1 = last (finish),
  fetch[s]  which mask block the step DMAs: its own if partial, else the last one fetched (no new DMA).
Full blocks take a branch with no mask load, compare or select at all.

DMA block and compute block: a step DMAs the layout's whole [block_q, block_k] block pair, and computes it
in key slices of COMPUTE_BLOCK (128, the MXU width) whenever block_k is larger (splash's block_kv vs
block_kv_compute): large layout blocks cut the grid steps and make each DMA longer, while the score tile
a matmul produces stays [block_q, 128].

The forward's running max and scale live lane-replicated in [block_q, 128] scratch and are used as they
are against a 128-key score slice (a lane prefix against the [block_q, head_dim] accumulator), never
re-broadcast from one lane.

Layouts: q/k/v/out and the gradients [batch, slots, heads * head_dim], the projection's own layout viewed
by a reshape: a step's block is [block, hb * head_dim], its heads side by side in the lanes, loaded a
128-lane group at a time (`lane_group`: two heads of 64) with each head's matmuls seeing only its own
lanes (the other head's zeroed in one operand, its results picked by lane). The kernels scale the scores
(`scale`), the forward can merge another component's result in its finish step (`merge_with`) and the
backward add other components' gradients in theirs (`add`). Row statistics (lse, delta) lane-dense
[batch, heads, 1, slots] (a block of them is one [1, block] row, not a [block, 1] column padded to
(8, 128) tiles). The dk/dv kernel computes transposed scores s^T = k q^T ([block_k, block_q]) so that
every matmul is NN or NT (no transposed-LHS matmul, hence no transposes inserted by Mosaic) and the
statistics broadcast along lanes; its masks are stored transposed.

Keys read in place (`kv_tail=(stride, tail)`): k and v come at full length, [B, L, H * D], and key slot j
is position (j // tail) * stride + stride - tail + j % tail (the last `tail` of every `stride` rows, in
order): the kernels read them through the free view [B, L / stride, stride, H * D] (it splits the sequence
axis at whole tiles), a key block being [block_k / tail, tail, hb * head_dim], instead of XLA slicing them
out. The backward's dk / dv stay in slot order; the kernels that add them into another component's
full-length dk / dv (`add_kv_tail`) read them [B, L / stride, tail, H * D] and add them to those rows.
The kernels know the geometry, not the pattern that has it (`tail_applies` says where it runs).

Backward, two ways (`backward(..., fused=...)`):
  split (default): a dq pass over row steps and a dk/dv pass over column steps; each recomputes the
      scores, 7 block matmuls per active block (3 + 4), and neither has a transposed-LHS matmul.
  fused: one pass over column steps computes dk, dv and each step's contribution to dq
      (ds^T k, [block_q, head_dim] float32, written to its own slot of a [steps, block_q, head_dim]
      array and summed per query block after the kernel, as splash's fused backward does per key block):
      5 block matmuls per active block and one grid pass fewer, for one transposed-LHS matmul per step
      and the partial-dq traffic (steps x block_q x head_dim x 4 bytes written and read once).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.block_layout import FULL_MASK_ID, MASKED_SCORE, BlockLayout
from pallas_kernels.kernel_cost import block_sparse_cost

_NT = (((1,), (1,)), ((), ()))  # a @ b.T
_SEMANTICS = ("parallel", "parallel", "arbitrary")
_LANES = 128
_FIRST, _LAST = 1, 2
EMPTY_MASK_ID = -1
COMPUTE_BLOCK = 128  # key positions per score tile inside a step; larger layout blocks are computed in slices
# Heads processed per grid step: the largest divisor of the head count whose q/k/v blocks stay within
# this many head_dim columns in total (VMEM per step stays ~ a few MiB at 128 x 128 blocks).
MAX_STEP_COLUMNS = 1024
# Heads of a grid step unrolled together inside the loop over them (code size against loop overhead).
HEAD_UNROLL = 2


def heads_per_step(heads: int, dim: int, block: int = COMPUTE_BLOCK) -> int:
    """How many heads one grid step processes (all share the layout): largest divisor within budget
    (MAX_STEP_COLUMNS at blocks of 128 rows or more; shorter blocks take proportionally more heads)."""
    limit = max(1, MAX_STEP_COLUMNS * max(1, COMPUTE_BLOCK // block) // max(dim, 1))
    fitting = [d for d in range(1, heads + 1) if heads % d == 0 and d <= limit]
    # A block's lanes must be a multiple of 128 or all of H * D (Mosaic's block rule; interpret mode
    # takes any, so the budget alone decides where no divisor meets it).
    tiled = [d for d in fitting if (d * dim) % _LANES == 0 or d == heads]
    return max(tiled or fitting)


def flat_steps(counts: np.ndarray, indices: np.ndarray, mask_ids: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-row padded tables -> the flat step list (rows, cols, kinds, fetch) described in the docstring."""
    rows, cols, mids = [], [], []
    last_col = 0
    for r, count in enumerate(counts):
        if count == 0:
            rows.append(r), cols.append(last_col), mids.append(EMPTY_MASK_ID)
            continue
        for j in range(int(count)):
            rows.append(r), cols.append(int(indices[r, j])), mids.append(int(mask_ids[r, j]))
        last_col = cols[-1]
    rows_a, cols_a, mids_a = (np.asarray(x, np.int32) for x in (rows, cols, mids))
    first = np.r_[True, rows_a[1:] != rows_a[:-1]]
    last = np.r_[rows_a[1:] != rows_a[:-1], True]
    kinds = (mids_a + 1) * 4 + first * _FIRST + last * _LAST
    partial = mids_a > FULL_MASK_ID
    last_partial = np.maximum.accumulate(np.where(partial, np.arange(mids_a.size), -1))
    fetch = np.where(last_partial >= 0, mids_a[np.maximum(last_partial, 0)], FULL_MASK_ID)
    return rows_a, cols_a, kinds.astype(np.int32), fetch.astype(np.int32)


def _row_steps(layout: BlockLayout) -> tuple[np.ndarray, ...]:
    """Forward / dq: per query block, its active key blocks."""
    return flat_steps(layout.kv_counts, layout.kv_indices, layout.kv_mask_ids)


def _column_steps(layout: BlockLayout) -> tuple[np.ndarray, ...]:
    """dk/dv: per key block, its active query blocks."""
    return flat_steps(layout.q_counts, layout.q_indices, layout.q_mask_ids)


def grid_steps(
    layout: BlockLayout, *, batch: int, heads: int, dim: int, fused: bool = False
) -> dict[str, int]:
    """Grid steps of the forward and backward kernels for one component (what the compiled kernels'
    iteration_bounds multiply out to): forward, dq and dk/dv, or forward and the fused backward."""
    groups = batch * (heads // heads_per_step(heads, dim, max(layout.block_q, layout.block_k)))
    rows, cols = _row_steps(layout)[0].size, _column_steps(layout)[0].size
    if fused:
        return {"fwd": groups * rows, "bwd": groups * cols}
    return {"fwd": groups * rows, "dq": groups * rows, "dkv": groups * cols}


def _masks(layout: BlockLayout, *, transposed: bool) -> jax.Array:
    """Deduplicated partial masks as int32 [num_masks, a, b] (Mosaic has no boolean memory operands);
    only ever DMA'd for partial blocks."""
    masks = layout.masks.transpose(0, 2, 1) if transposed else layout.masks
    return jnp.asarray(masks.astype(np.int32))


def _key_slices(block_k: int) -> list[slice]:
    """The compute slices of a key block (static: unrolled in the kernel)."""
    width = min(block_k, COMPUTE_BLOCK)
    return [slice(start, start + width) for start in range(0, block_k, width)]


def tail_applies(layout: BlockLayout, *, length: int, stride: int, tail: int) -> bool:
    """Whether the kernels can read a component's keys in place (`kv_tail`): the slots are exactly the
    last `tail` of every `stride` positions (no padding slots), the tail rows are a whole number of
    `tail`-row blocks of the view (stride a multiple of tail) and of bf16 tiles (16 rows), and every
    compute slice of a key block is whole tails."""
    block = layout.block_k
    return (
        length % stride == 0
        and stride % tail == 0
        and tail % 16 == 0
        and length // stride * tail == layout.num_k_blocks * block
        and block % tail == 0
        and min(block, COMPUTE_BLOCK) % tail == 0
    )


def tail_adds(layout: BlockLayout, *, length: int, stride: int, tail: int) -> bool:
    """Whether the dk/dv kernel of a natural-order component (`layout`) can add gradients over the
    (stride, tail) rows (`add_kv_tail`): its key blocks are whole strides over the whole length."""
    block = layout.block_k
    return (
        layout.num_k_blocks * block == length
        and block % stride == 0
        and stride % tail == 0
        and tail % 16 == 0
    )


def _tail_view(x: jax.Array, stride: int) -> jax.Array:
    """[B, L, H * D] -> [B, L / stride, stride, H * D]: a split of the sequence axis (free)."""
    batch, length, columns = x.shape
    return x.reshape(batch, length // stride, stride, columns)


def _key_count(ref) -> int:
    """Key rows of a key block: [block_k, cols], or [block_k / tail, tail, cols] read in place."""
    return ref.shape[0] if len(ref.shape) == 2 else ref.shape[0] * ref.shape[1]


def _key_rows(ref, keys: slice, lanes):
    """Rows `keys` of a key block and the lanes `lanes`, as [rows, lanes] (an in-place block's tails
    joined: a leading-dimension collapse of whole tiles)."""
    if len(ref.shape) == 2:
        return ref[keys, lanes]
    tail = ref.shape[1]
    rows = ref[keys.start // tail : keys.stop // tail, :, lanes]
    return rows.reshape(keys.stop - keys.start, rows.shape[-1])


def _decode(kinds, s):
    kind = kinds[s]
    return lax.shift_right_logical(kind, 2) - 1, (kind & _FIRST) != 0, (kind & _LAST) != 0


def _branches(mid, step):
    """Run `step(masked)` only for active blocks: the full-block variant never touches the mask."""

    @pl.when(mid == FULL_MASK_ID)
    def _full():
        step(False)

    @pl.when(mid > FULL_MASK_ID)
    def _partial():
        step(True)


def _specs(hb: int, dim: int, *, rows_block: int, cols_block: int):
    """BlockSpecs over [B, L, H * D] arrays: `own` follows the step's row block, `streamed` its column
    block, each [block, hb * dim] (the step's heads side by side in the lanes); stats are lane rows of
    [B, H, 1, L]."""
    cols = hb * dim

    def own(block=rows_block):
        return pl.BlockSpec((None, block, cols), lambda b, g, s, rows, cols_, *_: (b, rows[s], g))

    def streamed(block=cols_block):
        return pl.BlockSpec((None, block, cols), lambda b, g, s, rows, cols_, *_: (b, cols_[s], g))

    def stat_own(block=rows_block):
        return pl.BlockSpec((None, hb, 1, block), lambda b, g, s, rows, cols_, *_: (b, g, 0, rows[s]))

    def stat_streamed(block=cols_block):
        return pl.BlockSpec((None, hb, 1, block), lambda b, g, s, rows, cols_, *_: (b, g, 0, cols_[s]))

    def mask(a, c):
        return pl.BlockSpec((None, a, c), lambda b, g, s, rows, cols_, kinds, fetch: (fetch[s], 0, 0))

    return own, streamed, stat_own, stat_streamed, mask


def _tail_spec(block: int, columns: int, kv_tail: tuple[int, int], *, streamed: bool):
    """A key block read in place from the [B, L / stride, stride, H * D] view: block_k / tail strides'
    last `tail` rows (block index stride / tail - 1 along the stride axis, in units of tail)."""
    stride, tail = kv_tail
    at = stride // tail - 1
    if streamed:
        return pl.BlockSpec(
            (None, block // tail, tail, columns), lambda b, g, s, rows, cols_, *_: (b, cols_[s], at, g)
        )
    return pl.BlockSpec(
        (None, block // tail, tail, columns), lambda b, g, s, rows, cols_, *_: (b, rows[s], at, g)
    )


def _tail_add_spec(block: int, columns: int, kv_tail: tuple[int, int]):
    """Gradients over the (stride, tail) rows, [B, L / stride, tail, H * D], for the key block rows[s] of
    a full-length component: its block_k / stride strides' tails."""
    stride, tail = kv_tail
    return pl.BlockSpec(
        (None, block // stride, tail, columns), lambda b, g, s, rows, cols_, *_: (b, rows[s], 0, g)
    )


def _scaled(q, scale: float):
    """q times the score scale, in q's dtype (as XLA's q * scale would round it)."""
    return q if scale == 1.0 else (q.astype(jnp.float32) * scale).astype(q.dtype)


def _lanes_to(x, width: int):
    """A lane-replicated [rows, 128] statistic as [rows, width]: a lane prefix, or whole vregs repeated,
    never a re-broadcast of one lane (which costs lane permutes)."""
    if width <= _LANES:
        return x[:, :width]
    if width % _LANES:  # a group width no lane tiling divides (odd head_dim): one lane, broadcast
        return jnp.broadcast_to(x[:, :1], (x.shape[0], width))
    return pltpu.repeat(x, width // _LANES, axis=1)


def lane_group(hb: int, dim: int) -> int:
    """Heads per lane group: the heads of a step sit side by side in the lanes of a [block, hb * dim]
    block, and the kernels load them a lane group at a time, at offsets Mosaic can prove 128-aligned:
    every head of a step when they fit in 128 lanes, else 128 // dim heads (dim 64: pairs), else one."""
    if hb * dim <= _LANES:
        return hb
    if _LANES % dim == 0 and hb % (_LANES // dim) == 0:
        return _LANES // dim
    return 1 if dim % _LANES == 0 else hb


def _for_each_group(hb: int, dim: int, body) -> None:
    """body(lanes, heads) for the lane groups of a grid step: `lanes` indexes the group's columns of a
    [rows, hb * dim] block, `heads` its head numbers within the step. A loop unrolled HEAD_UNROLL groups
    at a time (a Python loop over all of them multiplies the compiled code by the group count)."""
    per = lane_group(hb, dim)
    width, groups = per * dim, hb // per
    if groups == 1:
        body(slice(None), list(range(per)))
        return

    def run(g, carry):
        start = pl.multiple_of(g * width, width)
        body(pl.ds(start, width), [g * per + j for j in range(per)])
        return carry

    lax.fori_loop(0, groups, run, None, unroll=min(HEAD_UNROLL, groups))


def _head_lanes(rows: int, per: int, dim: int, j: int):
    """Which lanes of a [rows, per * dim] lane group belong to its head j (None: the group is one head)."""
    if per == 1:
        return None
    lane = lax.broadcasted_iota(jnp.int32, (rows, per * dim), 1)
    return (lane >= j * dim) & (lane < (j + 1) * dim)


def _only(x, lanes):
    """x with every lane outside `lanes` zeroed: a matmul over the group's lanes then sees one head."""
    return x if lanes is None else jnp.where(lanes, x, jnp.zeros_like(x))


def _pick(lanes, new, old):
    """Lanes of one head from `new`, the rest from `old` (the first head of a group takes all of new)."""
    return new if old is None or lanes is None else jnp.where(lanes, new, old)


def _forward_kernel(rows, cols, kinds, fetch, q_ref, k_ref, v_ref, mask_ref, *refs, hb, dim, merge, scale):
    """`merge`: two more inputs, an earlier component's normalized output and lse over the same rows, which
    the finish step merges in by log-sum-exp (the op's output, written once)."""
    (o_prev_ref, lse_prev_ref), refs = (refs[:2], refs[2:]) if merge else ((None, None), refs)
    o_ref, lse_ref, m_s, l_s, acc_s = refs
    mid, first, last = _decode(kinds, pl.program_id(2))
    per, bq = lane_group(hb, dim), q_ref.shape[0]

    @pl.when(first)
    def _init():
        m_s[...] = jnp.full_like(m_s, -jnp.inf)
        l_s[...] = jnp.zeros_like(l_s)
        acc_s[...] = jnp.zeros_like(acc_s)

    def step(masked: bool):
        for keys in _key_slices(_key_count(k_ref)):
            allowed = mask_ref[:, keys] != 0 if masked else None

            def group(lanes, heads, keys=keys, allowed=allowed):
                q, k, v = (
                    _scaled(q_ref[:, lanes], scale),
                    _key_rows(k_ref, keys, lanes),
                    _key_rows(v_ref, keys, lanes),
                )
                rescale = update = None
                for j, h in enumerate(heads):
                    own = _head_lanes(bq, per, dim, j)
                    s = lax.dot_general(_only(q, own), k, _NT, preferred_element_type=jnp.float32)
                    if masked:
                        s = jnp.where(allowed, s, MASKED_SCORE)
                    m_prev = m_s[h]  # [bq, 128], lane-replicated: a 128-wide key slice uses it as is
                    m_next = jnp.maximum(m_prev, s.max(axis=-1, keepdims=True))
                    alpha = jnp.exp(m_prev - m_next)
                    p = jnp.exp(s - _lanes_to(m_next, s.shape[1]))
                    if masked:
                        p = jnp.where(allowed, p, 0.0)
                    l_s[h] = alpha * l_s[h] + p.sum(axis=-1, keepdims=True)
                    m_s[h] = m_next
                    pv = jnp.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)  # head j's lanes
                    rescale = _pick(own, _lanes_to(alpha, per * dim), rescale)
                    update = _pick(own, pv, update)
                acc_s[:, lanes] = rescale * acc_s[:, lanes] + update

            _for_each_group(hb, dim, group)

    _branches(mid, step)

    @pl.when(last)
    def _finish():
        def group(lanes, heads):
            own_scale = prev_scale = None
            for j, h in enumerate(heads):
                l = l_s[h]
                seen = l > 0
                safe = jnp.where(seen, l, 1.0)
                lse = jnp.where(seen, m_s[h] + jnp.log(safe), -jnp.inf)  # [bq, 128], every lane the same
                weight = 1.0 / safe
                if merge:  # exp(lse_c - lse) weighs each component's normalized output
                    prev = jnp.broadcast_to(lse_prev_ref[h, 0][:, None], lse.shape)
                    top = jnp.maximum(lse, prev)
                    top = jnp.where(top == -jnp.inf, 0.0, top)
                    own_w, prev_w = jnp.exp(lse - top), jnp.exp(prev - top)
                    total = own_w + prev_w
                    any_key = total > 0
                    total = jnp.where(any_key, total, 1.0)
                    weight = own_w / (safe * total)
                    head = _head_lanes(bq, per, dim, j)
                    prev_scale = _pick(head, _lanes_to(prev_w / total, per * dim), prev_scale)
                    lse = jnp.where(any_key, top + jnp.log(total), -jnp.inf)
                own_scale = _pick(_head_lanes(bq, per, dim, j), _lanes_to(weight, per * dim), own_scale)
                lse_ref[h] = lse.T[:1, :]  # one lane-dense row
            out = acc_s[:, lanes] * own_scale
            if merge:
                out += o_prev_ref[:, lanes].astype(jnp.float32) * prev_scale
            o_ref[:, lanes] = out.astype(o_ref.dtype)

        _for_each_group(hb, dim, group)


def forward(
    q,
    k,
    v,
    layout: BlockLayout,
    *,
    heads: int,
    interpret: bool,
    merge_with=None,
    scale: float = 1.0,
    kv_tail: tuple[int, int] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """q [B, Lq, H * D] (scores are scale * q k^T), k/v [B, Lk, H * D] -> out [B, Lq, H * D], lse
    [B, H, 1, Lq] f32.
    `merge_with` = (out, lse) of another component over the same rows: merged into the result.
    `kv_tail` = (stride, tail): k/v at full length, the keys read in place (module docstring)."""
    batch, q_len, columns = q.shape
    dim = columns // heads
    bq, bk = layout.block_q, layout.block_k
    hb = heads_per_step(heads, dim, max(bq, bk))
    steps = _row_steps(layout)
    own, streamed, stat_own, _, mask = _specs(hb, dim, rows_block=bq, cols_block=bk)
    keys = streamed()
    if kv_tail:
        keys = _tail_spec(bk, hb * dim, kv_tail, streamed=True)
        k, v = _tail_view(k, kv_tail[0]), _tail_view(v, kv_tail[0])
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=4,
        grid=(batch, heads // hb, steps[0].size),
        in_specs=[own(), keys, keys, mask(bq, bk)] + ([own(), stat_own()] if merge_with else []),
        out_specs=[own(), stat_own()],
        scratch_shapes=[
            pltpu.VMEM((hb, bq, _LANES), jnp.float32),
            pltpu.VMEM((hb, bq, _LANES), jnp.float32),
            pltpu.VMEM((bq, hb * dim), jnp.float32),
        ],
    )
    return pl.pallas_call(
        functools.partial(_forward_kernel, hb=hb, dim=dim, merge=merge_with is not None, scale=scale),
        grid_spec=grid_spec,
        out_shape=[
            jax.ShapeDtypeStruct(q.shape, q.dtype),
            jax.ShapeDtypeStruct((batch, heads, 1, q_len), jnp.float32),
        ],
        compiler_params=pltpu.CompilerParams(dimension_semantics=_SEMANTICS),
        cost_estimate=block_sparse_cost(
            layout,
            programs=batch * heads,
            dim=dim,
            itemsize=q.dtype.itemsize,
            matmuls=2,
            streamed=2,
            resident=3 if merge_with else 2,  # q, out (and the merged output read)
        ),
        interpret=interpret,
        name="sparse_flash_fwd",
    )(*map(jnp.asarray, steps), q, k, v, _masks(layout, transposed=False), *(merge_with or ()))


def _dq_kernel(
    rows,
    cols,
    kinds,
    fetch,
    q_ref,
    k_ref,
    v_ref,
    do_ref,
    lse_ref,
    delta_ref,
    mask_ref,
    *refs,
    hb,
    dim,
    add,
    scale,
):
    """`add`: one more input, gradients of other components for these rows, added in the finish step."""
    dq_prev_ref, (dq_ref, dq_s) = (refs[0] if add else None), refs[-2:]
    mid, first, last = _decode(kinds, pl.program_id(2))
    per, bq = lane_group(hb, dim), q_ref.shape[0]

    @pl.when(first)
    def _init():
        dq_s[...] = jnp.zeros_like(dq_s)

    def step(masked: bool):
        for keys in _key_slices(_key_count(k_ref)):
            allowed = mask_ref[:, keys] != 0 if masked else None

            def group(lanes, heads, keys=keys, allowed=allowed):
                q, do = _scaled(q_ref[:, lanes], scale), do_ref[:, lanes]
                k, v = _key_rows(k_ref, keys, lanes), _key_rows(v_ref, keys, lanes)
                update = None
                for j, h in enumerate(heads):
                    own = _head_lanes(bq, per, dim, j)
                    s = lax.dot_general(_only(q, own), k, _NT, preferred_element_type=jnp.float32)
                    p = jnp.exp(s - lse_ref[h, 0][:, None])
                    if masked:
                        p = jnp.where(allowed, p, 0.0)
                    dp = lax.dot_general(_only(do, own), v, _NT, preferred_element_type=jnp.float32)
                    ds = p * (dp - delta_ref[h, 0][:, None])
                    update = _pick(
                        own, jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32), update
                    )
                dq_s[:, lanes] += update

            _for_each_group(hb, dim, group)

    _branches(mid, step)

    @pl.when(last)
    def _finish():
        dq = dq_s[...] * scale  # the gradient of the unscaled q
        dq = dq + dq_prev_ref[...].astype(jnp.float32) if add else dq
        dq_ref[...] = dq.astype(dq_ref.dtype)


_TN = (((0,), (0,)), ((), ()))  # a.T @ b: the fused backward's dq contribution


def _dkv_kernel(
    rows,
    cols,
    kinds,
    fetch,
    q_ref,
    k_ref,
    v_ref,
    do_ref,
    lse_ref,
    delta_ref,
    mask_ref,
    *rest,
    hb,
    dim,
    fused,
    add,
    scale,
    add_tail=None,
):
    """dk, dv of the step's key block; `fused` also writes the step's dq contribution (its own slot);
    `add`: dk and dv of other components for these keys come in first, added in the finish step (with
    `add_tail` = (stride, tail): over the last `tail` of every `stride` rows only, [block_k / stride,
    tail, cols])."""
    (dk_prev_ref, dv_prev_ref), rest = (rest[:2], rest[2:]) if add else ((None, None), rest)
    dk_ref, dv_ref = rest[:2]
    dq_part_ref, (dk_s, dv_s) = (rest[2] if fused else None), rest[-2:]
    mid, first, last = _decode(kinds, pl.program_id(2))
    per = lane_group(hb, dim)

    @pl.when(first)
    def _init():
        dk_s[...] = jnp.zeros_like(dk_s)
        dv_s[...] = jnp.zeros_like(dv_s)

    if fused:

        @pl.when(mid == EMPTY_MASK_ID)
        def _no_contribution():  # every step owns its dq slot, so an empty row's step writes zeros
            dq_part_ref[...] = jnp.zeros_like(dq_part_ref)

    def step(masked: bool):
        slices = _key_slices(_key_count(k_ref))
        allowed = [mask_ref[keys, :] != 0 if masked else None for keys in slices]  # [keys, bq], transposed

        def group(lanes, heads):
            q, do = _scaled(q_ref[:, lanes], scale), do_ref[:, lanes]
            dq = None
            for keys, allowed_keys in zip(slices, allowed):
                k, v = _key_rows(k_ref, keys, lanes), _key_rows(v_ref, keys, lanes)
                dk = dv = dq_keys = None
                for j, h in enumerate(heads):
                    q_own = _head_lanes(q.shape[0], per, dim, j)
                    k_own = _head_lanes(k.shape[0], per, dim, j)
                    s_t = lax.dot_general(k, _only(q, q_own), _NT, preferred_element_type=jnp.float32)
                    p_t = jnp.exp(s_t - lse_ref[h])  # lse row [1, bq] broadcasts down the sublanes
                    if masked:
                        p_t = jnp.where(allowed_keys, p_t, 0.0)
                    dv_j = jnp.dot(p_t.astype(do.dtype), do, preferred_element_type=jnp.float32)
                    dv = _pick(k_own, dv_j, dv)
                    dp_t = lax.dot_general(_only(v, k_own), do, _NT, preferred_element_type=jnp.float32)
                    ds_t = (p_t * (dp_t - delta_ref[h])).astype(q.dtype)
                    dk = _pick(k_own, jnp.dot(ds_t, q, preferred_element_type=jnp.float32), dk)
                    if fused:
                        part = lax.dot_general(ds_t, k, _TN, preferred_element_type=jnp.float32)
                        dq_keys = _pick(q_own, part, dq_keys)
                dv_s[keys, lanes] += dv
                dk_s[keys, lanes] += dk
                if fused:
                    dq = dq_keys if dq is None else dq + dq_keys
            if fused:
                dq_part_ref[:, lanes] = dq

        _for_each_group(hb, dim, group)

    _branches(mid, step)

    @pl.when(last)
    def _finish():
        if add and add_tail:
            stride, tail = add_tail
            for i in range(dk_prev_ref.shape[0]):  # static: the block's strides
                rows = pl.ds(i * stride + stride - tail, tail)
                dk_s[rows, :] += dk_prev_ref[i].astype(jnp.float32)
                dv_s[rows, :] += dv_prev_ref[i].astype(jnp.float32)
        dk, dv = dk_s[...], dv_s[...]
        if add and not add_tail:
            dk, dv = dk + dk_prev_ref[...].astype(jnp.float32), dv + dv_prev_ref[...].astype(jnp.float32)
        dk_ref[...] = dk.astype(dk_ref.dtype)
        dv_ref[...] = dv.astype(dv_ref.dtype)


def _dkv_pass(
    q,
    k,
    v,
    do,
    lse,
    delta,
    layout: BlockLayout,
    *,
    heads: int,
    interpret: bool,
    fused: bool,
    add,
    scale,
    kv_tail=None,
    add_kv_tail=None,
):
    """The pass over the column steps: (dk, dv, None), or with `fused` (dk, dv, dq) where dq sums each
    step's float32 contribution per query block after the kernel."""
    batch, q_len, columns = q.shape
    dim = columns // heads
    bq, bk = layout.block_q, layout.block_k
    hb = heads_per_step(heads, dim, max(bq, bk))
    col_steps = _column_steps(layout)
    num_steps = col_steps[0].size
    own, streamed, _, stat_streamed, mask = _specs(hb, dim, rows_block=bk, cols_block=bq)
    keys = own()
    key_shape = (batch, layout.num_k_blocks * bk, columns)
    if kv_tail:
        keys = _tail_spec(bk, hb * dim, kv_tail, streamed=False)
        k, v = _tail_view(k, kv_tail[0]), _tail_view(v, kv_tail[0])
    added = [own(), own()]
    if add and add_kv_tail:
        added = [_tail_add_spec(bk, hb * dim, add_kv_tail)] * 2
        add = tuple(_tail_view(a, add_kv_tail[1]) for a in add)
    out_specs = [own(), own()]
    out_shape = [jax.ShapeDtypeStruct(key_shape, k.dtype), jax.ShapeDtypeStruct(key_shape, v.dtype)]
    if fused:
        out_specs.append(pl.BlockSpec((None, None, bq, hb * dim), lambda b, g, s, *_: (b, s, 0, g)))
        out_shape.append(jax.ShapeDtypeStruct((batch, num_steps, bq, columns), jnp.float32))
    outputs = pl.pallas_call(
        functools.partial(
            _dkv_kernel, hb=hb, dim=dim, fused=fused, add=add is not None, scale=scale, add_tail=add_kv_tail
        ),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=4,
            grid=(batch, heads // hb, num_steps),
            in_specs=[streamed(), keys, keys, streamed(), stat_streamed(), stat_streamed(), mask(bk, bq)]
            + (added if add else []),
            out_specs=out_specs,
            scratch_shapes=[pltpu.VMEM((bk, hb * dim), jnp.float32), pltpu.VMEM((bk, hb * dim), jnp.float32)],
        ),
        out_shape=out_shape,
        compiler_params=pltpu.CompilerParams(dimension_semantics=_SEMANTICS),
        cost_estimate=block_sparse_cost(
            layout,
            programs=batch * heads,
            dim=dim,
            itemsize=q.dtype.itemsize,
            matmuls=5 if fused else 4,
            streamed=4 if fused else 2,  # q, dout in; fused: the step's float32 dq out (counted twice)
            resident=6 if add else 4,  # k, v, dk, dv (and the added dk, dv read)
            by_key_blocks=True,
        ),
        interpret=interpret,
        name="sparse_flash_bwd_fused" if fused else "sparse_flash_dkv",
    )(*map(jnp.asarray, col_steps), q, k, v, do, lse, delta, _masks(layout, transposed=True), *(add or ()))
    if not fused:
        return (*outputs, None)
    dk, dv, parts = outputs
    query_blocks = jnp.asarray(col_steps[1])  # the streamed block of each step is its query block
    by_block = jax.ops.segment_sum(
        jnp.moveaxis(parts, 1, 0), query_blocks, num_segments=layout.num_q_blocks
    )  # [num_q_blocks, B, bq, H * D]
    dq = jnp.moveaxis(by_block, 0, 1).reshape(batch, q_len, columns) * scale
    return dk, dv, dq.astype(q.dtype)


def backward(
    q,
    k,
    v,
    do,
    lse,
    delta,
    layout: BlockLayout,
    *,
    heads: int,
    interpret: bool,
    fused: bool = False,
    add=None,
    scale: float = 1.0,
    kv_tail: tuple[int, int] | None = None,
    add_kv_tail: tuple[int, int] | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """dq, dk, dv [B, L, H * D] given lse and delta [B, H, 1, Lq] (delta = rowsum(out * dout) - dlse; lse
    finite); split into a dq and a dk/dv kernel, or `fused` into one (see the module docstring). `add` =
    (dq, dk, dv) of other components over the same rows and keys: added to the result by the kernels.
    `kv_tail`: k/v at full length read in place, dk/dv in slot order; `add_kv_tail` = (stride, tail):
    add's dk/dv are over those rows only, in slot order (module docstring)."""
    dk, dv, dq = _dkv_pass(
        q,
        k,
        v,
        do,
        lse,
        delta,
        layout,
        heads=heads,
        interpret=interpret,
        fused=fused,
        add=add and add[1:],
        scale=scale,
        kv_tail=kv_tail,
        add_kv_tail=add_kv_tail,
    )
    if fused:
        return (dq if add is None else dq + add[0]), dk, dv
    batch, _, columns = q.shape
    dim = columns // heads
    bq, bk = layout.block_q, layout.block_k
    hb = heads_per_step(heads, dim, max(bq, bk))
    row_steps = _row_steps(layout)
    own, streamed, stat_own, _, mask = _specs(hb, dim, rows_block=bq, cols_block=bk)
    keys = streamed()
    if kv_tail:
        keys = _tail_spec(bk, hb * dim, kv_tail, streamed=True)
        k, v = _tail_view(k, kv_tail[0]), _tail_view(v, kv_tail[0])
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, hb=hb, dim=dim, add=add is not None, scale=scale),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=4,
            grid=(batch, heads // hb, row_steps[0].size),
            in_specs=[own(), keys, keys, own(), stat_own(), stat_own(), mask(bq, bk)]
            + ([own()] if add else []),
            out_specs=own(),
            scratch_shapes=[pltpu.VMEM((bq, hb * dim), jnp.float32)],
        ),
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=pltpu.CompilerParams(dimension_semantics=_SEMANTICS),
        cost_estimate=block_sparse_cost(
            layout,
            programs=batch * heads,
            dim=dim,
            itemsize=q.dtype.itemsize,
            matmuls=3,
            streamed=2,
            resident=4 if add else 3,  # q, dout, dq (and the added dq read)
        ),
        interpret=interpret,
        name="sparse_flash_dq",
    )(
        *map(jnp.asarray, row_steps),
        q,
        k,
        v,
        do,
        lse,
        delta,
        _masks(layout, transposed=False),
        *(add or ())[:1],
    )
    return dq, dk, dv


def _row_dot_kernel(o_ref, do_ref, delta_ref, *, hb, dim):
    per, rows = lane_group(hb, dim), o_ref.shape[0]

    def group(lanes, heads):
        product = o_ref[:, lanes].astype(jnp.float32) * do_ref[:, lanes].astype(jnp.float32)
        for j, h in enumerate(heads):
            total = _only(product, _head_lanes(rows, per, dim, j)).sum(axis=-1, keepdims=True)
            delta_ref[h] = jnp.broadcast_to(total, (rows, _LANES)).T[:1, :]  # one lane-dense row

    _for_each_group(hb, dim, group)


def row_dot(out, dout, *, heads: int, interpret: bool) -> jax.Array:
    """rowsum(out * dout) per head, [B, L, H * D] x 2 -> [B, H, 1, L] float32: the backward's delta, read
    in the kernels' layouts (in XLA it is a float32 product, a relayout and a reduction)."""
    batch, length, columns = out.shape
    dim = columns // heads
    block = next((b for b in (512, 256, 128) if length % b == 0), length)
    hb = heads_per_step(heads, dim, block)
    rows = pl.BlockSpec((None, block, hb * dim), lambda b, g, r: (b, r, g))
    return pl.pallas_call(
        functools.partial(_row_dot_kernel, hb=hb, dim=dim),
        grid=(batch, heads // hb, length // block),
        in_specs=[rows, rows],
        out_specs=pl.BlockSpec((None, hb, 1, block), lambda b, g, r: (b, g, 0, r)),
        out_shape=jax.ShapeDtypeStruct((batch, heads, 1, length), jnp.float32),
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel")),
        cost_estimate=pl.CostEstimate(
            flops=2 * out.size,
            transcendentals=0,
            bytes_accessed=2 * out.size * out.dtype.itemsize + batch * heads * length * 4,
        ),
        interpret=interpret,
        name="sparse_flash_delta",
    )(out, dout)
