"""Block-sparse flash attention on one layout component: Pallas kernels tied together by `custom_vjp`.

`sparse_flash_attention(q, k, v, layout)` has the component contract of block_layout.py (q already scaled,
returns the normalized output and the log-sum-exp per row). Which kernel runs is decided when the
program is lowered, not when it is traced (`lax.platform_dependent`), so ahead-of-time compilation for a
TPU or GPU from a CPU host gets the real kernel: Mosaic on TPU (flash_tpu), Triton on CUDA/ROCm
(flash_gpu), and on CPU the TPU kernel in Pallas interpret mode (slow; for tests). The kernels see one
device's arrays: placing them on a mesh is the caller's business (musenet_jax.attention).

Under rematerialization the forward kernel's results are residuals worth keeping: they are tagged with
`checkpoint_name` (RESIDUAL_NAMES), so a remat policy that saves these names lets the backward run from
them instead of running the forward kernel a second time.

Backward: the log-sum-exp is an output too (components are merged by it), so its cotangent enters the
score gradient: dS = P * (dP - delta) with delta = rowsum(out * dout) - dlse.

`merged_attention(q, k, v, parts)` runs all components of one pattern as one op, in the TPU kernels' own
layouts ([B, L, H * D], statistics [B, H, 1, L]): strided's folded far part runs on TPU in place
(strided_far_tpu, on the free [B, L / l, l, H * D] view; elsewhere, or where those kernels do not apply,
its positions are folded into heads by a reshape), a natural part is a view, fixed's summary keys are
read by the TPU kernels in place through the same kind of view (flash_tpu `kv_tail`; elsewhere a strided
slice); the part whose queries and keys are in natural order runs last, its forward kernel
merging the others' output and lse in its finish step and
its backward kernels adding the others' gradients (the summary keys' dk / dv to their rows, in place); the
backward of every part takes the merged lse and
delta = rowsum(out * dout) (a small row kernel), so no merge is differentiated. Its result and lse are
the remat residuals. The Triton path does the merge, the delta and the score scale in XLA (GPU only).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.ad_checkpoint import checkpoint_name

from pallas_kernels import flash_gpu, flash_tpu, strided_far_tpu
from pallas_kernels.block_layout import BlockLayout, block_layout

Kernel = Literal["auto", "tpu", "gpu"]

MIN_BLOCK = 128  # smallest block edge the kernels take: a full MXU / lane width on TPU, >= 64 for Triton
# head_dim is zero-padded to a power of two >= this for the Triton kernels (Triton dots need 16).
MIN_HEAD_DIM = 16
# The names the forward's output and log-sum-exp carry as residuals (jax.ad_checkpoint.checkpoint_name).
RESIDUAL_NAMES: tuple[str, ...] = ("sparse_flash_out", "sparse_flash_lse")


class BlockSizeError(ValueError):
    """A block size the Pallas kernels cannot take; its message is one line, fit for a CLI error."""


def pallas_block_size(block_size: int) -> int:
    """The layout block edge the Pallas backend uses for a configured `block_size`: a power of two,
    at least MIN_BLOCK (smaller configured blocks are raised to it; the XLA backend keeps them)."""
    if block_size < 1 or block_size & (block_size - 1):
        raise BlockSizeError(
            "attention backend 'pallas' needs block_size to be a power of two (Triton block shapes, TPU "
            "tiles), "
            f"got {block_size}"
        )
    return max(block_size, MIN_BLOCK)


def _columns(*xs: jax.Array) -> tuple[jax.Array, ...]:
    """[B, L, H, D] -> [B, L, H * D]: the TPU kernels' view, a reshape of the projection's own layout (the
    heads of a grid step sit side by side in the lanes of one block), never a transpose."""
    return tuple(x.reshape(*x.shape[:2], -1) for x in xs)


def _tpu_forward(q, k, v, layout: BlockLayout, interpret: bool):
    out, lse = flash_tpu.forward(*_columns(q, k, v), layout, heads=q.shape[2], interpret=interpret)
    return out.reshape(q.shape), lse[:, :, 0].transpose(0, 2, 1)


def _tpu_backward(q, k, v, dout, lse, delta, layout: BlockLayout, interpret: bool, fused: bool):
    stats = (x.transpose(0, 2, 1)[:, :, None] for x in (lse, delta))  # lane-dense [B, H, 1, L]
    grads = flash_tpu.backward(
        *_columns(q, k, v, dout), *stats, layout, heads=q.shape[2], interpret=interpret, fused=fused
    )
    return tuple(g.reshape(x.shape) for g, x in zip(grads, (q, k, v)))


def _pad_head_dim(*xs: jax.Array) -> tuple[jax.Array, ...]:
    """Zero-pad head_dim to a power of two >= 16 (Triton block shapes); zeros change no score."""
    dim = xs[0].shape[-1]
    padded = max(MIN_HEAD_DIM, 1 << (dim - 1).bit_length())
    return tuple(jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, padded - dim))) for x in xs)


def _gpu_block(layout: BlockLayout) -> BlockLayout:
    """The layout the Triton kernels run: a one-block layout shorter than their smallest block (a folded
    component, see musenet_jax.attention.layouts) grown to flash_gpu.MIN_BLOCK with padding slots, which
    see nothing and are seen by nothing; any other layout as it is."""
    edge = flash_gpu.MIN_BLOCK
    if max(layout.block_q, layout.block_k) >= edge or layout.num_q_blocks != 1 or layout.num_k_blocks != 1:
        return layout
    masks = np.zeros((layout.num_active + 1, edge, edge), bool)
    masks[0] = True
    for a, mid in enumerate(layout.mask_ids):
        masks[a + 1, : layout.block_q, : layout.block_k] = layout.masks[mid]
    pad = lambda positions: np.pad(positions, (0, edge - positions.size), constant_values=-1)  # noqa: E731
    return block_layout(
        edge, edge, 1, 1, layout.q_block_ids, layout.k_block_ids, np.arange(1, layout.num_active + 1), masks,
        q_positions=pad(layout.q_positions), k_positions=pad(layout.k_positions), allowed=layout.allowed,
    )  # fmt: skip


def _grow(x: jax.Array, length: int) -> jax.Array:
    """Zero rows appended along the sequence axis (GPU only, for _gpu_block's padding slots)."""
    if length <= x.shape[1]:
        return x
    return jnp.pad(x, [(0, 0), (0, length - x.shape[1])] + [(0, 0)] * (x.ndim - 2))


def _gpu_forward(q, k, v, layout: BlockLayout, interpret: bool):
    grown = _gpu_block(layout)
    q_len = q.shape[1]
    q, k, v = _grow(q, grown.block_q), _grow(k, grown.block_k), _grow(v, grown.block_k)
    out, lse = flash_gpu.forward(*_pad_head_dim(q, k, v), grown, interpret=interpret)
    return out[:, :q_len, :, : q.shape[-1]], lse.transpose(0, 2, 1)[:, :q_len]


def _gpu_backward(q, k, v, dout, lse, delta, layout: BlockLayout, interpret: bool):
    grown = _gpu_block(layout)
    q_len, k_len, dim = q.shape[1], k.shape[1], q.shape[-1]
    q, dout, lse, delta = (_grow(x, grown.block_q) for x in (q, dout, lse, delta))
    k, v = _grow(k, grown.block_k), _grow(v, grown.block_k)
    dq, dk, dv = flash_gpu.backward(
        *_pad_head_dim(q, k, v, dout),
        lse.transpose(0, 2, 1),
        delta.transpose(0, 2, 1),
        grown,
        interpret=interpret,
    )
    return dq[:, :q_len, :, :dim], dk[:, :k_len, :, :dim], dv[:, :k_len, :, :dim]


def _run(kernel: Kernel, interpret: bool, tpu_fn, gpu_fn, layout: BlockLayout, *arrays: jax.Array):
    """A forced kernel family, or the lowering platform's (interpreting the TPU kernel anywhere else)."""
    if kernel == "tpu":
        return tpu_fn(*arrays, layout=layout, interpret=interpret)
    if kernel == "gpu":
        return gpu_fn(*arrays, layout=layout, interpret=interpret)
    return lax.platform_dependent(
        *arrays,
        tpu=functools.partial(tpu_fn, layout=layout, interpret=False),
        cuda=functools.partial(gpu_fn, layout=layout, interpret=False),
        rocm=functools.partial(gpu_fn, layout=layout, interpret=False),
        default=functools.partial(tpu_fn, layout=layout, interpret=True),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _attention(q, k, v, layout: BlockLayout, kernel: Kernel, interpret: bool, fused_backward: bool):
    return _run(kernel, interpret, _tpu_forward, _gpu_forward, layout, q, k, v)


def _attention_fwd(q, k, v, layout, kernel, interpret, fused_backward):
    out, lse = _attention(q, k, v, layout, kernel, interpret, fused_backward)
    out, lse = (checkpoint_name(x, name) for x, name in zip((out, lse), RESIDUAL_NAMES))
    return (out, lse), (q, k, v, out, lse)


def _attention_bwd(layout, kernel, interpret, fused_backward, residuals, cotangents):
    q, k, v, out, lse = residuals
    dout, dlse = cotangents
    delta = (out.astype(jnp.float32) * dout.astype(jnp.float32)).sum(axis=-1) - dlse
    finite_lse = jnp.where(jnp.isfinite(lse), lse, 0.0)  # rows with no key: every score is masked anyway
    return _run(
        kernel,
        interpret,
        functools.partial(_tpu_backward, fused=fused_backward),
        _gpu_backward,
        layout,
        q,
        k,
        v,
        dout.astype(q.dtype),
        finite_lse,
        delta,
    )


_attention.defvjp(_attention_fwd, _attention_bwd)


def sparse_flash_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    layout: BlockLayout,
    *,
    kernel: Kernel = "auto",
    interpret: bool = False,
    fused_backward: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """q [B, Lq, H, D] (already scaled), k/v [B, Lk, H, D] in the layout's slot order ->
    out [B, Lq, H, D] (0 on rows with no key), lse [B, Lq, H] float32 (-inf on rows with no key).

    kernel="auto" picks by lowering platform (interpreting on CPU); "tpu" / "gpu" force a kernel family,
    e.g. to test the GPU kernel in interpret mode on CPU. `fused_backward` computes dq, dk and dv in one
    TPU kernel (flash_tpu's module docstring); the GPU kernels always run the split backward."""
    whole = layout.num_q_blocks == layout.num_k_blocks == 1  # one block as long as the whole sequence
    if min(layout.block_q, layout.block_k) < MIN_BLOCK and not whole:
        raise BlockSizeError(
            f"Pallas kernels need blocks >= {MIN_BLOCK}, layout has {layout.block_q}x{layout.block_k}"
        )
    return _attention(q, k, v, layout, kernel, interpret, fused_backward)


def _tpu_native_forward(
    q, k, v, *merge_with, layout: BlockLayout, interpret: bool, heads: int, scale: float, kv_tail=None
):
    """[B, L, H * D] in and out, statistics [B, H, 1, L]: the TPU kernels' own layouts, nothing moved;
    `merge_with` (out, lse) of earlier components is merged in by the kernel's finish step; `kv_tail`:
    k/v at full length, the keys read in place (flash_tpu)."""
    return flash_tpu.forward(
        q,
        k,
        v,
        layout,
        heads=heads,
        interpret=interpret,
        merge_with=tuple(merge_with) or None,
        scale=scale,
        kv_tail=kv_tail,
    )


def _tpu_native_backward(
    q,
    k,
    v,
    dout,
    lse,
    delta,
    *add,
    layout: BlockLayout,
    interpret: bool,
    heads: int,
    fused: bool,
    scale: float,
    kv_tail=None,
    add_kv_tail=None,
):
    """`add` (dq, dk, dv) of earlier components is added by the kernels' finish steps (dk, dv over the
    `add_kv_tail` rows only where given)."""
    return flash_tpu.backward(
        q,
        k,
        v,
        dout,
        lse,
        delta,
        layout,
        heads=heads,
        interpret=interpret,
        fused=fused,
        add=tuple(add) or None,
        scale=scale,
        kv_tail=kv_tail,
        add_kv_tail=add_kv_tail,
    )


def _tpu_row_dot(out, dout, *, layout: BlockLayout, interpret: bool, heads: int):
    del layout  # _run's signature: the delta kernel reads rows, no blocks of a layout
    return flash_tpu.row_dot(out, dout, heads=heads, interpret=interpret)


def _xla_row_dot(out, dout, *, layout: BlockLayout, interpret: bool, heads: int):
    """The delta in XLA for the Triton path (GPU only)."""
    del layout, interpret
    products = (out.astype(jnp.float32) * dout.astype(jnp.float32)).reshape(*out.shape[:2], heads, -1)
    return jnp.swapaxes(products.sum(axis=-1), 1, 2)[:, :, None]


def _heads(x: jax.Array, heads: int) -> jax.Array:
    return x.reshape(*x.shape[:2], heads, -1)


def _merge(out_a, lse_a, out_b, lse_b, dim: int):
    """Two components' normalized outputs [B, L, H * D] and lse [B, H, 1, L] merged by log-sum-exp (what
    the TPU forward kernel's finish step does; here for the Triton path and for more than two parts)."""
    top = jnp.maximum(lse_a, lse_b)
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    w_a, w_b = jnp.exp(lse_a - top), jnp.exp(lse_b - top)  # 0 for a part that sees no key of a row
    total = w_a + w_b
    seen = total > 0
    safe = jnp.where(seen, total, 1.0)
    merged = _per_column(w_a / safe, dim) * out_a.astype(jnp.float32)
    merged += _per_column(w_b / safe, dim) * out_b.astype(jnp.float32)
    return merged.astype(out_a.dtype), jnp.where(seen, top + jnp.log(safe), -jnp.inf)


def _per_column(w: jax.Array, dim: int) -> jax.Array:
    """A row statistic [B, H, 1, L] as a factor on [B, L, H * D]."""
    batch, heads, _, length = w.shape
    by_row = jnp.swapaxes(w[:, :, 0], 1, 2)  # [B, L, H]
    return jnp.broadcast_to(by_row[..., None], (batch, length, heads, dim)).reshape(
        batch, length, heads * dim
    )


def _gpu_native_forward(
    q, k, v, *merge_with, layout: BlockLayout, interpret: bool, heads: int, scale: float, kv_tail=None
):
    """The Triton kernels behind the TPU kernels' layouts: their statistics are [B, L, H], so they are
    transposed here, a merge is an XLA pass, and `kv_tail`'s keys a slice (GPU only)."""
    if kv_tail:
        k, v = (_tail_slice(x, kv_tail) for x in (k, v))
    scaled = q * jnp.asarray(scale, q.dtype)  # the Triton kernels take q scaled (GPU only)
    out, lse = _gpu_forward(*(_heads(x, heads) for x in (scaled, k, v)), layout, interpret)
    out, lse = out.reshape(q.shape), lse.transpose(0, 2, 1)[:, :, None]
    if merge_with:
        return _merge(out, lse, *merge_with, q.shape[-1] // heads)
    return out, lse


def _gpu_native_backward(
    q,
    k,
    v,
    dout,
    lse,
    delta,
    *add,
    layout: BlockLayout,
    interpret: bool,
    heads: int,
    scale: float,
    kv_tail=None,
    add_kv_tail=None,
):
    """The Triton kernels' backward in the TPU kernels' layouts; `kv_tail`'s keys a slice, and
    `add_kv_tail`'s gradients padded back to full length, in XLA (GPU only)."""
    if kv_tail:
        k, v = (_tail_slice(x, kv_tail) for x in (k, v))
    if add_kv_tail:
        add = (add[0], *(_tail_pad(g, add_kv_tail, k.shape[1]) for g in add[1:]))
    stats = (x[:, :, 0].transpose(0, 2, 1) for x in (lse, delta))
    scaled = q * jnp.asarray(scale, q.dtype)
    grads = _gpu_backward(*(_heads(x, heads) for x in (scaled, k, v, dout)), *stats, layout, interpret)
    dq, dk, dv = (g.reshape(x.shape) for g, x in zip(grads, (q, k, v)))
    grads = ((dq.astype(jnp.float32) * scale).astype(q.dtype), dk, dv)
    return tuple(g + a for g, a in zip(grads, add)) if add else grads


@dataclasses.dataclass(frozen=True, eq=False)
class Part:
    """One component as `merged_attention` runs it: its layout and how q/k/v reach its slot order."""

    layout: BlockLayout
    fold: int = 1  # > 1: positions folded into heads, q/k/v viewed [B, L / fold, fold * H * D] (a reshape)
    q_index: np.ndarray | None = None  # slot -> query position (-1: zero row); None: natural order
    kv_index: np.ndarray | None = None  # slot -> key position (-1: zero row); None: natural order
    q_slot: np.ndarray | None = None  # query position -> slot, where q_index is given
    # (l, c): the keys are the last c of every l positions, in order (fixed(l, c)'s summary keys): the TPU
    # kernels read them in place from the [B, L / l, l, H * D] view where flash_tpu.tail_applies, else a
    # strided slice of that view (padded back in the backward); never a gather or scatter.
    kv_tail: tuple[int, int] | None = None

    @property
    def q_slots(self) -> int:
        return self.layout.num_q_blocks * self.layout.block_q

    @property
    def k_slots(self) -> int:
        return self.layout.num_k_blocks * self.layout.block_k


def _in_place(part: Part, length: int) -> bool:
    """Whether the TPU kernels read this part's keys in place (no slice of k and v)."""
    if part.kv_tail is None:
        return False
    stride, tail = part.kv_tail
    return flash_tpu.tail_applies(part.layout, length=length, stride=stride, tail=tail)


def _tail_adds(last: Part, kv_tail: tuple[int, int], length: int) -> bool:
    """Whether the last (natural-order) part's dk/dv kernel can add gradients over the kv_tail rows."""
    stride, tail = kv_tail
    return flash_tpu.tail_adds(last.layout, length=length, stride=stride, tail=tail)


def _tail_slice(x: jax.Array, kv_tail: tuple[int, int]) -> jax.Array:
    """[B, L, H * D] -> the last `tail` of every `stride` rows, [B, L / stride * tail, H * D] (XLA)."""
    stride, tail = kv_tail
    batch, length, columns = x.shape
    rows = x.reshape(batch, length // stride, stride, columns)[:, :, stride - tail :]
    return rows.reshape(batch, length // stride * tail, columns)


def _tail_pad(g: jax.Array, kv_tail: tuple[int, int], length: int) -> jax.Array:
    """The transpose of `_tail_slice` (slots past the tails dropped): zeros elsewhere (XLA)."""
    stride, tail = kv_tail
    rows = g[:, : length // stride * tail].reshape(g.shape[0], length // stride, tail, g.shape[2])
    return jnp.pad(rows, ((0, 0), (0, 0), (stride - tail, 0), (0, 0))).reshape(g.shape[0], length, -1)


def _rows(index: np.ndarray, length: int) -> jax.Array:
    return jnp.asarray(np.where(index < 0, length, index))  # slot -1 reads the zero row appended at `length`


def _into(x: jax.Array, part: Part, index: np.ndarray | None, slots: int) -> jax.Array:
    """[B, L, H * D] -> the part's slot order: a reshape (folded), zero rows appended (natural, when L is
    no block multiple), a strided slice (fixed's summary keys, where the kernels do not read them in
    place), or a gather (fixed's summary keys or strided's far part when L is no multiple of the stride)."""
    batch, length, columns = x.shape
    if part.fold > 1:
        return x.reshape(batch, length // part.fold, part.fold * columns)
    if index is part.kv_index and part.kv_tail:
        return _grow(_tail_slice(x, part.kv_tail), slots)
    if index is None:
        return _grow(x, slots)
    return jnp.take(jnp.pad(x, ((0, 0), (0, 1), (0, 0))), _rows(index, length), axis=1)


def _out_of(y: jax.Array, part: Part, length: int) -> jax.Array:
    """Query rows of slot order back to positions, [B, L, H * D]."""
    if part.fold > 1:
        return y.reshape(y.shape[0], length, -1)
    if part.q_index is None:
        return y[:, :length]
    return jnp.take(y, jnp.asarray(part.q_slot), axis=1)


def _grad_of(g: jax.Array, part: Part, index: np.ndarray | None, length: int) -> jax.Array:
    """The transpose of `_into`: a reshape, a slice, or a scatter-add."""
    if part.fold > 1:
        return g.reshape(g.shape[0], length, -1)
    if index is part.kv_index and part.kv_tail:
        return _tail_pad(g, part.kv_tail, length)
    if index is None:
        return g[:, :length]
    summed = jnp.zeros((g.shape[0], length + 1, g.shape[2]), g.dtype).at[:, _rows(index, length)].add(g)
    return summed[:, :length]


def _stats_into(x: jax.Array, part: Part, heads: int) -> jax.Array:
    """Row statistics [B, H, 1, L] -> the part's [B, H', 1, slots]. Folded: row t, head g * H + h is
    position t * fold + g of head h, a transpose of these small float32 arrays (the statistics' only
    one: the kernels' statistics are lane rows per head, so no reshape turns one order into the other)."""
    batch, length = x.shape[0], x.shape[-1]
    if part.fold > 1:
        rows = length // part.fold
        x = x.reshape(batch, heads, rows, part.fold).transpose(0, 3, 1, 2)
        return x.reshape(batch, part.fold * heads, 1, rows)
    if part.q_index is None:
        return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, part.q_slots - length)))
    return jnp.take(jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, 1))), _rows(part.q_index, length), axis=3)


def _stats_out_of(x: jax.Array, part: Part, length: int, heads: int) -> jax.Array:
    """The inverse of `_stats_into` for a part's output statistics."""
    batch = x.shape[0]
    if part.fold > 1:
        x = x.reshape(batch, part.fold, heads, length // part.fold).transpose(0, 2, 3, 1)
        return x.reshape(batch, heads, 1, length)
    if part.q_index is None:
        return x[..., :length]
    return jnp.take(x, jnp.asarray(part.q_slot), axis=3)


def _folded_forward(
    native, q, k, v, *, layout: BlockLayout, interpret: bool, heads: int, scale: float, stride: int
):
    """A folded part's forward on [B, L, H * D] arrays and [B, H, 1, L] statistics: `native` (a kernel
    family's forward in the kernels' layouts) on the fold [B, L / l, l * H * D] (a reshape: free on GPU,
    a relayout on TPU, see strided_far_tpu)."""
    part, length = Part(layout, fold=stride), q.shape[1]
    out, lse = native(
        *(_into(x, part, None, 0) for x in (q, k, v)),
        layout=layout,
        interpret=interpret,
        heads=heads * stride,
        scale=scale,
    )
    return _out_of(out, part, length), _stats_out_of(lse, part, length, heads)


def _folded_backward(
    native,
    q,
    k,
    v,
    dout,
    lse,
    delta,
    *,
    layout: BlockLayout,
    interpret: bool,
    heads: int,
    scale: float,
    stride: int,
):
    """The backward of `_folded_forward`: natural arrays and statistics in, natural gradients out."""
    part, length = Part(layout, fold=stride), q.shape[1]
    grads = native(
        *(_into(x, part, None, 0) for x in (q, k, v, dout)),
        _stats_into(lse, part, heads),
        _stats_into(delta, part, heads),
        layout=layout,
        interpret=interpret,
        heads=heads * stride,
        scale=scale,
    )
    return tuple(_grad_of(g, part, None, length) for g in grads)


def _far_kernels_apply(q: jax.Array, layout: BlockLayout, heads: int, stride: int) -> bool:
    return strided_far_tpu.applies(
        layout,
        length=q.shape[1],
        stride=stride,
        columns=q.shape[2],
        dim=q.shape[2] // heads,
        dtype=q.dtype,
    )


def _tpu_far_forward(q, k, v, *, layout: BlockLayout, interpret: bool, heads: int, scale: float, stride: int):
    """strided(l)'s folded far part on TPU: the residue kernels on the [B, T, l, H * D] view where they
    apply (no relayout), else the fold."""
    if not _far_kernels_apply(q, layout, heads, stride):
        return _folded_forward(
            _tpu_native_forward,
            q,
            k,
            v,
            layout=layout,
            interpret=interpret,
            heads=heads,
            scale=scale,
            stride=stride,
        )
    return strided_far_tpu.forward(
        q, k, v, layout, stride=stride, heads=heads, scale=scale, interpret=interpret
    )


def _tpu_far_backward(
    q,
    k,
    v,
    dout,
    lse,
    delta,
    *,
    layout: BlockLayout,
    interpret: bool,
    heads: int,
    scale: float,
    stride: int,
    fused: bool,
):
    if not _far_kernels_apply(q, layout, heads, stride):
        return _folded_backward(
            functools.partial(_tpu_native_backward, fused=fused),
            q, k, v, dout, lse, delta,
            layout=layout, interpret=interpret, heads=heads, scale=scale, stride=stride,
        )  # fmt: skip
    return strided_far_tpu.backward(
        q, k, v, dout, lse, delta, layout, stride=stride, heads=heads, scale=scale, interpret=interpret
    )


def _last(parts: tuple[Part, ...]) -> int:
    """The part whose kernels merge the others' results in (forward) and add their gradients (backward):
    one whose queries and keys are in natural order, so the others' outputs and gradients are its
    blocks as they are; -1 if none is (then XLA merges)."""
    return next(
        (i for i, p in enumerate(parts) if p.fold == 1 and p.q_index is None and p.kv_index is None), -1
    )


def _ordered(parts: tuple[Part, ...]) -> tuple[tuple[Part, ...], Part | None]:
    i = _last(parts)
    return (parts, None) if i < 0 or len(parts) == 1 else (parts[:i] + parts[i + 1 :], parts[i])


def _merged_forward(q, k, v, parts, heads, kernel, interpret):
    """Every part's kernel; the last (natural-order) part's forward kernel merges the others' results in
    by log-sum-exp in its finish step: out [B, L, H * D] (q's dtype) and lse [B, H, 1, L] float32."""
    length, dim = q.shape[1], q.shape[2] // heads
    scale = dim**-0.5
    others, last = _ordered(parts)
    prev = None
    for part in others + ((last,) if last else ()):
        if part.fold > 1:
            result = _run(
                kernel,
                interpret,
                functools.partial(_tpu_far_forward, heads=heads, scale=scale, stride=part.fold),
                functools.partial(
                    _folded_forward, _gpu_native_forward, heads=heads, scale=scale, stride=part.fold
                ),
                part.layout,
                q,
                k,
                v,
            )
            prev = result if prev is None else _merge(*prev, *result, dim)
            continue
        merge_with = ()
        if part is last:
            merge_with = (_grow(prev[0], part.q_slots), _stats_into(prev[1], part, heads))
        tail = part.kv_tail if _in_place(part, length) else None
        keys = (k, v) if tail else (_into(x, part, part.kv_index, part.k_slots) for x in (k, v))
        out, lse = _run(
            kernel,
            interpret,
            functools.partial(_tpu_native_forward, heads=heads * part.fold, scale=scale, kv_tail=tail),
            functools.partial(_gpu_native_forward, heads=heads * part.fold, scale=scale, kv_tail=tail),
            part.layout,
            _into(q, part, part.q_index, part.q_slots),
            *keys,
            *merge_with,
        )
        result = _out_of(out, part, length), _stats_out_of(lse, part, length, heads)
        prev = result if prev is None or part is last else _merge(*prev, *result, dim)
    return prev


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6, 7))
def _merged(q, k, v, parts, heads, kernel, interpret, fused_backward):
    return _merged_forward(q, k, v, parts, heads, kernel, interpret)[0]


def _merged_fwd(q, k, v, parts, heads, kernel, interpret, fused_backward):
    out, lse = _merged_forward(q, k, v, parts, heads, kernel, interpret)
    out, lse = (checkpoint_name(x, name) for x, name in zip((out, lse), RESIDUAL_NAMES))
    return out, (q, k, v, out, lse)


def _merged_bwd(parts, heads, kernel, interpret, fused_backward, residuals, dout):
    """Each part's backward kernels take the merged lse and delta = rowsum(out * dout): the softmax over
    the union of the parts' keys, so no part's own output or lse is needed and no merge is differentiated;
    the parts' gradients are summed in q's dtype."""
    q, k, v, out, lse = residuals
    scale = (q.shape[2] // heads) ** -0.5
    length, columns = q.shape[1:]
    dout = dout.astype(q.dtype)
    delta = _run(
        kernel,
        interpret,
        functools.partial(_tpu_row_dot, heads=heads),
        functools.partial(_xla_row_dot, heads=heads),
        parts[0].layout,
        out,
        dout,
    )  # [B, H, 1, L]
    lse = jnp.where(jnp.isfinite(lse), lse, 0.0)  # rows with no key: every score is masked anyway
    others, last = _ordered(parts)
    totals = None
    tail_add = None  # (l, c) when totals' dk / dv cover only those rows, in slot order
    for part in others + ((last,) if last else ()):
        if part.fold > 1:
            grads = _run(
                kernel,
                interpret,
                functools.partial(
                    _tpu_far_backward, heads=heads, scale=scale, stride=part.fold, fused=fused_backward
                ),
                functools.partial(
                    _folded_backward, _gpu_native_backward, heads=heads, scale=scale, stride=part.fold
                ),
                part.layout,
                q,
                k,
                v,
                dout,
                lse,
                delta,
            )
            totals = grads if totals is None else tuple(t + g for t, g in zip(totals, grads))
            continue
        add, add_tail = (), None
        if part is last:
            added = totals[1:] if tail_add else tuple(_grow(t, part.k_slots) for t in totals[1:])
            add, add_tail = (_grow(totals[0], part.q_slots), *added), tail_add
        tail = part.kv_tail if _in_place(part, length) else None
        keys = (k, v) if tail else (_into(x, part, part.kv_index, part.k_slots) for x in (k, v))
        grads = _run(
            kernel,
            interpret,
            functools.partial(
                _tpu_native_backward,
                heads=heads * part.fold,
                fused=fused_backward,
                scale=scale,
                kv_tail=tail,
                add_kv_tail=add_tail,
            ),
            functools.partial(
                _gpu_native_backward, heads=heads * part.fold, scale=scale, kv_tail=tail, add_kv_tail=add_tail
            ),
            part.layout,
            _into(q, part, part.q_index, part.q_slots),
            *keys,
            _into(dout, part, part.q_index, part.q_slots),
            _stats_into(lse, part, heads),
            _stats_into(delta, part, heads),
            *add,
        )
        if tail and others == (part,) and last and _tail_adds(last, tail, length):
            # dk / dv stay in slot order: the last part's dk/dv kernel adds them to their rows
            grads, tail_add = (_grad_of(grads[0], part, part.q_index, length), *grads[1:]), tail
        else:
            grads = tuple(
                _grad_of(g, part, index, length)
                for g, index in zip(grads, (part.q_index, part.kv_index, part.kv_index))
            )
        totals = grads if totals is None or part is last else tuple(t + g for t, g in zip(totals, grads))
    return totals


_merged.defvjp(_merged_fwd, _merged_bwd)


def merged_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    parts: tuple[Part, ...],
    *,
    kernel: Kernel = "auto",
    interpret: bool = False,
    fused_backward: bool = False,
) -> jax.Array:
    """q, k, v [B, L, H, D] -> out [B, L, H, D], scores scaled by 1/sqrt(D) in the kernels: the disjoint
    `parts` (one pattern's components) run and merged as one op on the [B, L, H * D] view (a reshape),
    whose backward takes the merged lse and delta."""
    for part in parts:
        lay, whole = part.layout, part.layout.num_q_blocks == part.layout.num_k_blocks == 1
        if min(lay.block_q, lay.block_k) < MIN_BLOCK and not whole:
            raise BlockSizeError(
                f"Pallas kernels need blocks >= {MIN_BLOCK}, layout has {lay.block_q}x{lay.block_k}"
            )
    batch, length, heads, dim = q.shape
    flat = (x.reshape(batch, length, heads * dim) for x in (q, k, v))
    out = _merged(*flat, tuple(parts), heads, kernel, interpret, fused_backward)
    return out.reshape(q.shape)
