"""The `jax_splash_components` baseline: JAX's splash attention run on our layout's components instead of
on the pattern's mask in natural order, so that the comparison with our kernels isolates the kernels.

A pattern is split as musenet_jax/attention/layouts.py splits it, each component in the order that makes it
dense-causal or block-diagonal, every one a splash call with a mask splash knows:

- strided(l): the band (i - j < l, natural order): `LocalMask` with window (l - 1, 0); the far part
  (i - j >= l, a multiple of l) on the sequence permuted by (i mod l, i div l) (a transpose of the free view
  [B, n/l, l, H, D]): strictly causal inside l groups of n/l slots, a `NumpyMask`. (Folding the groups into
  the heads instead would give splash n/l-long sequences, shorter than the 128 it takes at n = 4096.)
- fixed(l, c): the same-l-block part (natural order): causal in chunks of l, a `NumpyMask`; the summary part
  with keys sliced down to the last c rows of every l (n/l * c keys): key group s // c strictly before query
  block i // l, a `NumpyMask`.

The components' outputs are merged by their log-sum-exp, as our op merges them (splash returns its lse with
`save_residuals=True`). Splash has no backward for its lse, so the merge is one `jax.custom_vjp`: its
backward runs splash's own backward kernels per component with the merged output and lse (the statistics of
the whole pattern, which makes each component's dq/dk/dv its share of the exact gradient), through splash's
private `_splash_attention_bwd` (jax.experimental.pallas.ops.tpu.splash_attention, checked on jax 0.10).
n must be a multiple of l: the free views need it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from musenet_jax.attention.patterns import Fixed, Pattern, Strided
from musenet_jax.errors import UserError

NATURAL, RESIDUE, SUMMARY = "natural", "residue", "summary"  # how q/k/v are reordered for one component


@dataclasses.dataclass(frozen=True, eq=False)
class SplashPart:
    """One component as a splash call: its mask over (reordered query, reordered key), the same for every
    head, and how queries and keys are reordered ([B, n, H, D] -> splash's [B, H, S, D])."""

    name: str
    mask: Any  # a splash Mask of shape [q_len, kv_len]
    array: np.ndarray  # the same mask as booleans (to count active blocks)
    q_order: str
    kv_order: str


@functools.lru_cache(maxsize=8)
def splash_parts(pattern: Pattern, seq: int) -> tuple[SplashPart, ...]:
    """`pattern`'s components at length `seq` as splash calls (module docstring); empty ones left out."""
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    if not isinstance(pattern, (Strided, Fixed)):
        raise UserError(f"backend jax_splash_components knows strided and fixed patterns, not {pattern.name}")
    l = pattern.stride
    if seq % l:
        raise UserError(
            f"backend jax_splash_components needs --seq a multiple of the stride ({l}), got {seq}: "
            "leave it out of --backends for this length"
        )
    groups = seq // l
    slot = np.arange(seq)
    if isinstance(pattern, Strided):
        band = splash.LocalMask((seq, seq), window_size=(l - 1, 0), offset=0)
        # slot g * groups + t holds position t * l + g: same group, strictly earlier slot
        far = (slot[:, None] // groups == slot[None, :] // groups) & (slot[None, :] < slot[:, None])
        parts = [
            SplashPart("band", band, np.asarray(band[:, :]), NATURAL, NATURAL),
            SplashPart("strided", splash.NumpyMask(far), far, RESIDUE, RESIDUE),
        ]
    else:
        c = pattern.summary
        # block-diagonal causal: a NumpyMask, since ChunkedCausalMask's in-kernel `//` lowers through
        # lax.sign, whose Mosaic rule asks the default device for its TPU generation (fails in an AOT
        # compile from a CPU host, jax 0.10)
        block = (slot[:, None] // l == slot[None, :] // l) & (slot[None, :] <= slot[:, None])
        keys = np.arange(groups * c)
        summary = keys[None, :] // c < slot[:, None] // l
        parts = [
            SplashPart("block", splash.NumpyMask(block), block, NATURAL, NATURAL),
            SplashPart("summary", splash.NumpyMask(summary), summary, NATURAL, SUMMARY),
        ]
    return tuple(p for p in parts if p.array.any())


def _heads_first(x, order: str, pattern: Pattern):
    """[B, n, H, ...] -> splash's [B, H, S, ...] in `order` (transposes of free views of the rows)."""
    batch, seq, heads = x.shape[:3]
    tail = x.shape[3:]
    if order == NATURAL:
        return x.swapaxes(1, 2)
    l = pattern.stride
    rows = x.reshape(batch, seq // l, l, heads, *tail)
    if order == RESIDUE:  # slot g * (n / l) + t holds position t * l + g
        return rows.swapaxes(1, 3).reshape(batch, heads, seq, *tail)  # [B, H, g, t]
    c = pattern.summary  # SUMMARY: the last c rows of every l
    summary = rows[:, :, l - c :].swapaxes(1, 3).swapaxes(2, 3)  # [B, H, t, c]
    return summary.reshape(batch, heads, (seq // l) * c, *tail)


def _positions_first(y, order: str, pattern: Pattern):
    """The inverse of _heads_first for a query order: [B, H, n, ...] -> [B, n, H, ...]."""
    if order == NATURAL:
        return y.swapaxes(1, 2)
    batch, heads, seq = y.shape[:3]
    tail = y.shape[3:]
    l = pattern.stride
    groups = y.reshape(batch, heads, l, seq // l, *tail)  # [B, H, g, t]
    return groups.swapaxes(1, 3).reshape(batch, seq, heads, *tail)  # [B, t, g, H] = position t * l + g


def _kernel(part: SplashPart, heads: int, block_sizes, interpret: bool):
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    return splash.make_splash_mha(
        splash.MultiHeadMask([part.mask] * heads),
        head_shards=1,
        q_seq_shards=1,
        block_sizes=block_sizes or splash.BlockSizes.get_default(),
        save_residuals=True,
        interpret=interpret,
    )


def _collapsed(mask_info):
    """The mask info as splash's own entry point hands it to its kernels (partial blocks flattened)."""
    if mask_info is None or mask_info.partial_mask_blocks is None:
        return mask_info
    blocks = mask_info.partial_mask_blocks
    return mask_info._replace(partial_mask_blocks=blocks.reshape(-1, *blocks.shape[-2:]))


def _splash_backward(kernel, q, k, v, out, lse, dout):
    """Splash's backward kernels for one batch element with the given output and lse: (dq, dk, dv)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernels

    options = dict(kernel.kwargs, save_residuals=False)
    infos = _collapsed(kernel.dq_mask_info), _collapsed(kernel.dkv_mask_info)
    residuals = (q, k, v, None, None, out, lse, *infos)
    grads = kernels._splash_attention_bwd(**options, res=residuals, do=dout)
    return grads[3:6]


def _merge(outs, lses):
    """Components' [B, n, H, D] outputs and [B, n, H] lses merged exactly: (out float32, lse). A component
    with no key for a row has lse -inf (its output may be NaN there) or near splash's mask value: weight 0."""
    import jax.numpy as jnp
    from jax import lax

    lse = jnp.stack(lses)
    top = lax.stop_gradient(lse.max(axis=0))
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    weights = jnp.exp(lse - top)
    total = weights.sum(axis=0)
    merged = sum(jnp.where(w[..., None] > 0, w[..., None] * o, 0.0) for w, o in zip(weights, outs))
    return merged / total[..., None], top + jnp.log(total)


def components_attention(q, k, v, pattern: Pattern, *, interpret: bool, block_sizes=None):
    """Splash on `pattern`'s components, merged by lse; q/k/v [B, n, H, D], scaled like ours.
    `block_sizes`: one splash BlockSizes per component (splash_parts order), default splash's own."""
    import jax
    import jax.numpy as jnp

    batch, seq, heads, dim = q.shape
    parts = splash_parts(pattern, seq)
    kernels = [_kernel(p, heads, b, interpret) for p, b in zip(parts, block_sizes or [None] * len(parts))]

    def run(views):
        outs, lses = [], []
        for part, kernel, (qc, kc, vc) in zip(parts, kernels, views):
            out, (lse,) = jax.vmap(kernel)(qc, kc, vc)
            outs.append(_positions_first(out.astype(jnp.float32), part.q_order, pattern))
            lses.append(_positions_first(lse, part.q_order, pattern))
        out, lse = _merge(outs, lses)
        return out.astype(q.dtype), lse

    @jax.custom_vjp
    def merged(views):
        return run(views)[0]

    def merged_fwd(views):
        out, lse = run(views)
        return out, (views, out, lse)

    def merged_bwd(residuals, dout):
        views, out, lse = residuals
        grads = []
        for part, kernel, view in zip(parts, kernels, views):
            stats = [_heads_first(x, part.q_order, pattern) for x in (out, lse, dout)]
            grads.append(jax.vmap(functools.partial(_splash_backward, kernel))(*view, *stats))
        return (tuple(grads),)

    merged.defvjp(merged_fwd, merged_bwd)
    q = q * jnp.asarray(dim**-0.5, q.dtype)
    views = tuple(
        (
            _heads_first(q, p.q_order, pattern),
            _heads_first(k, p.kv_order, pattern),
            _heads_first(v, p.kv_order, pattern),
        )
        for p in parts
    )
    return merged(views)
