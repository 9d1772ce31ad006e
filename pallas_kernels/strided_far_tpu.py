"""strided(l)'s far part on TPU, read where the positions lie: no fold, no relayout.

The far part (i - j >= l, a multiple of l) at n = T * l is, for every residue r < l and head h, strictly
causal attention over the T positions t * l + r. Folding those positions into heads ([B, n, H * D] ->
[B, T, l * H * D]) is a reshape, but on TPU's tiled HBM layout (8 or 16 rows x 128 lanes a tile) it moves
every tile: eight such copies over the forward and backward, each also a fusion of about 1 MB of code.

These kernels read the free view [B, T, l, H * D] instead (l a multiple of the tile's rows): a grid step's
block is [T, G, 128] (all T rows of G residues, a 128-lane group of heads); in VMEM that is [T * G, 128]
whose residue r is every G-th row, read and written with strided loads and stores. Mosaic strides only
32-bit rows, so 16-bit blocks are viewed as uint32 (two neighbouring residues packed in one word, the
even one in the low half) and split / joined with shifts; the unrolled loop over a step's residues has
static offsets (a dynamic start is not provably tile-aligned for Mosaic).

One block covers all T rows (the layout `musenet_jax.attention.layouts._folded_strided` builds when T fits
its block), so the softmax is exact in one pass and the backward is one kernel: dq, dk and dv of a step's
residues from the merged lse and delta (dq = ds k through the one transposed-LHS matmul, on [T, T] tiles).
Row statistics (lse, delta) come and go as the [B, H, 1, n] the other kernels use, viewed [B, H, T, l]
(at l = 128 the same bytes in XLA's tiled layout: no copy); a step writes its residues' lanes of the
forward's lse block with a select (the block stays while the steps over residue groups fill it), and the
backward turns the [T, l] block into [l, T] rows (one small transpose a step).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.block_layout import MASKED_SCORE, BlockLayout
from pallas_kernels.kernel_cost import block_sparse_cost

_LANES = 128
_NT = (((1,), (1,)), ((), ()))  # a @ b.T
_TN = (((0,), (0,)), ((), ()))  # a.T @ b
_HIGH = 0xFFFF0000
# Rows (T x residues) a grid step carries: enough work per step against its fixed cost, and a few
# hundred KiB per block in VMEM.
STEP_ROWS = 1024
MIN_RESIDUES = 8  # a block's residues are its second-minor dimension: a multiple of 8 rows
MAX_ROWS = 128  # T: the [T, T] score tiles of a residue and head stay a few vregs' worth


def residues_per_step(stride: int, rows: int) -> int:
    """G: residues of one grid step, a power of two dividing the stride."""
    g = MIN_RESIDUES
    while g * 2 <= stride and stride % (g * 2) == 0 and (g * 2) * rows <= STEP_ROWS:
        g *= 2
    return g


def applies(layout: BlockLayout, *, length: int, stride: int, columns: int, dim: int, dtype) -> bool:
    """Whether these kernels run the folded far part: one block over the T = length / stride rows (at most
    MAX_ROWS), the stride a multiple of MIN_RESIDUES, 128-lane groups of whole heads, bfloat16 (split from
    a 32-bit word as float32's top half) or float32."""
    rows = length // stride
    return (
        length % stride == 0
        and layout.num_q_blocks == layout.num_k_blocks == 1
        and layout.block_q == layout.block_k == rows <= MAX_ROWS
        and stride % MIN_RESIDUES == 0
        and columns % _LANES == 0
        and _LANES % dim == 0
        and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))
    )


def _pack(dtype) -> int:
    return 4 // jnp.dtype(dtype).itemsize  # residues per 32-bit row


def _words(ref, rows: int, residues: int):
    """A [T, G, 128] block as the [T * G / pack, 128] 32-bit rows a strided access takes."""
    flat = ref.reshape(rows * residues, _LANES)
    return flat if _pack(ref.dtype) == 1 else flat.bitcast(jnp.uint32)


def _load(ref, rows: int, residues: int, first: int) -> list[jax.Array]:
    """[T, 128] rows of the residues packed in word row `first` (one, or two for 16-bit elements)."""
    pack = _pack(ref.dtype)
    words = _words(ref, rows, residues)[pl.ds(first, rows, stride=residues // pack), :]
    if pack == 1:
        return [words]
    low = pltpu.bitcast(words << 16, jnp.float32).astype(ref.dtype)  # exact: bf16 is f32's top half
    high = pltpu.bitcast(words & jnp.uint32(_HIGH), jnp.float32).astype(ref.dtype)
    return [low, high]


def _store(ref, rows: int, residues: int, first: int, values: list[jax.Array], interpret: bool) -> None:
    """The inverse of `_load`: values (float32) rounded to the ref's dtype and packed back."""
    pack = _pack(ref.dtype)
    rounded = [v.astype(ref.dtype) for v in values]
    if pack == 1:
        word = rounded[0]
    else:
        low, high = (pltpu.bitcast(v.astype(jnp.float32), jnp.uint32) for v in rounded)
        word = (high & jnp.uint32(_HIGH)) | (low >> 16)
    if interpret:  # interpret mode stores through no reshaped ref: the same words, unpacked by the
        # value-level bitcast (which follows the TPU's packing), stored one residue at a time
        unpacked = word if pack == 1 else pltpu.bitcast(word, ref.dtype).reshape(rows, pack, _LANES)
        for i in range(pack):
            ref[:, first * pack + i, :] = unpacked if pack == 1 else unpacked[:, i, :]
        return
    _words(ref, rows, residues)[pl.ds(first, rows, stride=residues // pack), :] = word


def _head_lanes(rows: int, dim: int, j: int):
    lane = lax.broadcasted_iota(jnp.int32, (rows, _LANES), 1)
    return (lane >= j * dim) & (lane < (j + 1) * dim)


def _only(x, lanes):
    return jnp.where(lanes, x, jnp.zeros_like(x))


def _pick(lanes, new, old):
    return new if old is None else jnp.where(lanes, new, old)


def _scaled(q, scale: float):
    return q if scale == 1.0 else (q.astype(jnp.float32) * scale).astype(q.dtype)


def _residue_groups(residues: int, dtype):
    """(word row, [residue numbers]) of a step's residues, static."""
    pack = _pack(dtype)
    return [(w, [w * pack + i for i in range(pack)]) for w in range(residues // pack)]


def _residue_lanes(rows: int, stride: int, residue):
    """[T, l] mask of the lane that holds `residue` in a [T, l] view of row statistics."""
    return lax.broadcasted_iota(jnp.int32, (rows, stride), 1) == residue


def _forward_kernel(q_ref, k_ref, v_ref, o_ref, lse_ref, *, rows, residues, dim, scale, interpret):
    first_residue = pl.program_id(2) * residues
    earlier = lax.broadcasted_iota(jnp.int32, (rows, rows), 1) < lax.broadcasted_iota(
        jnp.int32, (rows, rows), 0
    )  # key u < query t: strictly causal over the T rows
    for word, numbers in _residue_groups(residues, q_ref.dtype):
        qs, ks, vs = (_load(ref, rows, residues, word) for ref in (q_ref, k_ref, v_ref))
        outs = []
        for r, q, k, v in zip(numbers, qs, ks, vs):
            q = _scaled(q, scale)
            out = None
            for j in range(_LANES // dim):
                own = _head_lanes(rows, dim, j)
                s = lax.dot_general(_only(q, own), k, _NT, preferred_element_type=jnp.float32)
                s = jnp.where(earlier, s, MASKED_SCORE)
                m = s.max(axis=-1, keepdims=True)
                p = jnp.where(earlier, jnp.exp(s - m), 0.0)
                total = p.sum(axis=-1, keepdims=True)
                seen = total > 0
                safe = jnp.where(seen, total, 1.0)
                pv = jnp.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)
                out = _pick(own, pv * (1.0 / safe), out)
                lse = jnp.where(seen, m + jnp.log(safe), -jnp.inf)  # [T, 1]: this residue's lane of [T, l]
                lanes = _residue_lanes(rows, lse_ref.shape[-1], first_residue + r)
                lse_ref[j] = jnp.where(lanes, lse, lse_ref[j])
            outs.append(out)
        _store(o_ref, rows, residues, word, outs, interpret)


def _backward_kernel(
    q_ref,
    k_ref,
    v_ref,
    do_ref,
    lse_ref,
    delta_ref,
    dq_ref,
    dk_ref,
    dv_ref,
    stats_t,
    *,
    rows,
    residues,
    dim,
    scale,
    interpret,
):
    earlier_t = lax.broadcasted_iota(jnp.int32, (rows, rows), 0) < lax.broadcasted_iota(
        jnp.int32, (rows, rows), 1
    )  # transposed scores [keys u, queries t]: u < t
    for i, ref in enumerate((lse_ref, delta_ref)):  # [T, l] -> [l, T]: a residue's statistics as a row
        for j in range(_LANES // dim):
            stats_t[i, j] = ref[j].T
    step_rows = pl.ds(pl.multiple_of(pl.program_id(2) * residues, residues), residues)
    lse_rows = [stats_t[0, j, step_rows, :] for j in range(_LANES // dim)]  # [G, T] each
    delta_rows = [stats_t[1, j, step_rows, :] for j in range(_LANES // dim)]
    for word, numbers in _residue_groups(residues, q_ref.dtype):
        qs, ks, vs, dos = (_load(ref, rows, residues, word) for ref in (q_ref, k_ref, v_ref, do_ref))
        grads = [], [], []
        for r, q, k, v, do in zip(numbers, qs, ks, vs, dos):
            q = _scaled(q, scale)
            dq = dk = dv = None
            for j in range(_LANES // dim):
                own = _head_lanes(rows, dim, j)
                s_t = lax.dot_general(k, _only(q, own), _NT, preferred_element_type=jnp.float32)
                lse = lse_rows[j][r : r + 1]  # [1, T]: broadcasts down the key rows
                p_t = jnp.where(earlier_t, jnp.exp(s_t - lse), 0.0)
                dv = _pick(own, jnp.dot(p_t.astype(do.dtype), do, preferred_element_type=jnp.float32), dv)
                dp_t = lax.dot_general(_only(v, own), do, _NT, preferred_element_type=jnp.float32)
                ds_t = (p_t * (dp_t - delta_rows[j][r : r + 1])).astype(q.dtype)
                dk = _pick(own, jnp.dot(ds_t, q, preferred_element_type=jnp.float32), dk)
                dq = _pick(own, lax.dot_general(ds_t, k, _TN, preferred_element_type=jnp.float32), dq)
            for grad, value in zip(grads, (dq * scale, dk, dv)):
                grad.append(value)
        for ref, values in zip((dq_ref, dk_ref, dv_ref), grads):
            _store(ref, rows, residues, word, values, interpret)


def _specs(rows: int, residues: int, dim: int, stride: int):
    """q/k/v-like blocks [T, G, 128] of [B, T, l, H * D]; statistics [heads of the lanes, T, l] of
    [B, H, T, l] (all residues: a step reads or writes its own lanes)."""
    block = pl.BlockSpec((None, rows, residues, _LANES), lambda b, c, g: (b, 0, g, c))
    stats = pl.BlockSpec((None, _LANES // dim, rows, stride), lambda b, c, g: (b, c, 0, 0))
    return block, stats


def _view(*xs: jax.Array, rows: int, stride: int, interpret: bool) -> tuple[jax.Array, ...]:
    """[B, n, H * D] -> [B, T, l, H * D] (free on TPU: whole tiles). In interpret mode behind an
    optimization barrier: XLA on CPU constant-folds the packed-word loads of a constant input wrongly
    (a closed-over cotangent gave gradients off by units), so no input of the kernel is a constant."""
    views = tuple(x.reshape(x.shape[0], rows, stride, x.shape[2]) for x in xs)
    return lax.optimization_barrier(views) if interpret else views


def _grid(batch: int, columns: int, stride: int, residues: int) -> tuple[int, int, int]:
    return batch, columns // _LANES, stride // residues


def forward(
    q, k, v, layout: BlockLayout, *, stride: int, heads: int, scale: float, interpret: bool
) -> tuple[jax.Array, jax.Array]:
    """q, k, v [B, n, H * D] -> out [B, n, H * D] (0 where t = 0: no key), lse [B, H, 1, n] float32."""
    batch, length, columns = q.shape
    dim, rows = columns // heads, length // stride
    residues = residues_per_step(stride, rows)
    block, stats = _specs(rows, residues, dim, stride)
    view = functools.partial(_view, rows=rows, stride=stride, interpret=interpret)
    out, lse = pl.pallas_call(
        functools.partial(
            _forward_kernel, rows=rows, residues=residues, dim=dim, scale=scale, interpret=interpret
        ),
        grid=_grid(batch, columns, stride, residues),
        in_specs=[block, block, block],
        out_specs=[block, stats],
        out_shape=[
            jax.ShapeDtypeStruct((batch, rows, stride, columns), q.dtype),
            jax.ShapeDtypeStruct((batch, heads, rows, stride), jnp.float32),
        ],  # the lse block stays while the steps over residue groups fill its lanes:
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary")),
        cost_estimate=block_sparse_cost(
            layout,
            programs=batch * heads * stride,
            dim=dim,
            itemsize=q.dtype.itemsize,
            matmuls=2,
            streamed=2,
            resident=2,
        ),  # fmt: skip
        interpret=interpret,
        name="strided_far_fwd",
    )(*view(q, k, v))
    return out.reshape(q.shape), lse.reshape(batch, heads, 1, length)


def backward(
    q, k, v, dout, lse, delta, layout: BlockLayout, *, stride: int, heads: int, scale: float, interpret: bool
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """dq, dk, dv [B, n, H * D] from the merged lse (finite) and delta, both [B, H, 1, n]."""
    batch, length, columns = q.shape
    dim, rows = columns // heads, length // stride
    residues = residues_per_step(stride, rows)
    block, stats = _specs(rows, residues, dim, stride)
    view = functools.partial(_view, rows=rows, stride=stride, interpret=interpret)
    shape = jax.ShapeDtypeStruct((batch, rows, stride, columns), q.dtype)
    grads = pl.pallas_call(
        functools.partial(
            _backward_kernel, rows=rows, residues=residues, dim=dim, scale=scale, interpret=interpret
        ),
        grid=_grid(batch, columns, stride, residues),
        in_specs=[block] * 4 + [stats] * 2,
        out_specs=[block] * 3,
        out_shape=[shape] * 3,
        scratch_shapes=[pltpu.VMEM((2, _LANES // dim, stride, rows), jnp.float32)],
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel",) * 3),
        cost_estimate=block_sparse_cost(
            layout,
            programs=batch * heads * stride,
            dim=dim,
            itemsize=q.dtype.itemsize,
            matmuls=5,
            streamed=3,
            resident=4,
        ),  # fmt: skip  # q, k, v, dout read; dq, dk, dv written
        interpret=interpret,
        name="strided_far_bwd",
    )(*view(q, k, v, dout), *(x.reshape(batch, heads, rows, stride) for x in (lse, delta)))
    return tuple(g.reshape(q.shape) for g in grads)
