"""Pattern + sequence length + block size -> the block tables the kernels consume
(`pallas_kernels.block_layout`).

Format
------
`make_layout(pattern, seq_len, block_size)` returns a `PatternLayout`: a few `Component`s whose allowed
(query, key) pairs partition the pattern's. Each component is one block-sparse attention call in its own
slot order; `backends.attend` runs every component and merges their results by log-sum-exp, which is
exact because the components are disjoint:

    for each component c:
        q_c = q gathered by c.q_index, k_c / v_c = k / v gathered by c.kv_index   (slot -1 = zero padding)
        out_c, lse_c = kernel(q_c, k_c, v_c, c.layout)     # q_c arrives scaled by 1/sqrt(head_dim);
                                                            # lse_c = -inf on rows with no allowed key
        out_c, lse_c = rows taken back to positions by c.q_slot
    out = sum_c exp(lse_c - max lse) * out_c / sum_c exp(lse_c - max lse)

Why components: strided(l)'s columns touch every key block, so it is split into the local band
(i - j < l, natural order) and the far strided part (i - j >= l, (i - j) % l == 0). The far part, with
positions permuted by (i mod l, i div l) (the Sparse Transformer trick), is strictly causal attention
inside l groups of ceil(n / l) slots, i.e. block-diagonal. When n is a multiple of l that permutation is
a reshape: q/k/v [B, n, H, D] viewed as [B, n / l, l * H, D] put the l groups in the heads, and the far
part is strictly causal attention over n / l rows of l * H heads (`Component.fold`; no gather, no
scatter-add in the backward; the Pallas TPU kernels read the same rows in place through the free view
[B, n / l, l, H * D] instead, pallas_kernels/strided_far_tpu.py). fixed(l, c) is split into the same-l-block
part (natural order) and the summary part whose keys are gathered into a compact sequence of the
summary positions only. A union takes each pattern's components minus what earlier patterns allow.

The tables of one component are a `pallas_kernels.block_layout.BlockLayout` (see its docstring).

Block sizes: `block_size` is the largest edge. A component may use a smaller power-of-two edge (never
below `min_block_size`): while the whole layout computes more than `max_waste` times the allowed pairs,
the component wasting most is halved. Kernels that need a fixed edge pass min_block_size=block_size.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from musenet_jax.attention.patterns import Fixed, Pattern, Strided, Union
from musenet_jax.errors import UserError
from pallas_kernels.block_layout import FULL_MASK_ID, BlockLayout, block_layout

_CHUNK_ELEMENTS = 1 << 22  # predicate evaluations per numpy step while scanning a component
MIN_FOLDED_BLOCK = 16  # shortest folded sequence run as one block (_folded_strided)

Predicate = Callable[[Any, Any], Any]
Order = Callable[[int, int], np.ndarray]  # (seq_len, block) -> original position of each slot, -1 = pad


@dataclasses.dataclass(frozen=True, eq=False)
class Component:
    """One block-sparse attention call: slot orders for queries and keys, and its block layout."""

    name: str
    q_index: np.ndarray  # [num_q_blocks * block_q] original query position per slot, -1 = padding
    kv_index: np.ndarray  # [num_k_blocks * block_k] original key position per slot, -1 = padding
    q_slot: np.ndarray  # [seq_len] slot of each query position (inverse of q_index)
    layout: BlockLayout
    allowed_pairs: int  # (query, key) pairs of the pattern this component covers
    # Positions folded into heads: the component runs on q/k/v reshaped [B, L / fold, fold * H, D] (row t,
    # head g * H + h is position t * fold + g of head h), its slots are rows t. 1: not folded.
    fold: int = 1

    @property
    def computed_pairs(self) -> int:
        return self.layout.computed_pairs * self.fold

    @property
    def q_is_natural(self) -> bool:
        return _is_natural(self.q_index, self.q_slot.size)

    @property
    def kv_is_natural(self) -> bool:
        return _is_natural(self.kv_index, self.q_slot.size)


@dataclasses.dataclass(frozen=True, eq=False)
class PatternLayout:
    """All components of one pattern at one sequence length."""

    pattern_name: str
    seq_len: int
    components: tuple[Component, ...]

    @property
    def allowed_pairs(self) -> int:
        return sum(c.allowed_pairs for c in self.components)

    @property
    def computed_pairs(self) -> int:
        return sum(c.computed_pairs for c in self.components)

    @property
    def pattern_density(self) -> float:
        """Fraction of all n x n pairs the pattern allows."""
        return self.allowed_pairs / self.seq_len**2

    @property
    def density(self) -> float:
        """Fraction of all n x n pairs the layout computes (active blocks x block area / n^2)."""
        return self.computed_pairs / self.seq_len**2

    def coverage(self) -> np.ndarray:
        """[n, n] count of components that compute each pair unmasked; equals the pattern mask. For tests."""
        n = self.seq_len
        counts = np.zeros((n + 1, n + 1), dtype=np.int32)  # row/column n collects padding slots
        for comp in self.components:
            lay = comp.layout
            for g in range(comp.fold):  # a folded component's rows t hold positions t * fold + g
                q_pos = np.where(comp.q_index < 0, n, comp.q_index * comp.fold + g)
                k_pos = np.where(comp.kv_index < 0, n, comp.kv_index * comp.fold + g)
                for qb, kb, mid in zip(lay.q_block_ids, lay.k_block_ids, lay.mask_ids):
                    rows = q_pos[qb * lay.block_q : (qb + 1) * lay.block_q]
                    cols = k_pos[kb * lay.block_k : (kb + 1) * lay.block_k]
                    np.add.at(counts, (rows[:, None], cols[None, :]), lay.masks[mid].astype(np.int32))
        return counts[:n, :n]


@dataclasses.dataclass(frozen=True)
class _Part:
    """Recipe of a component before its block edge is chosen."""

    name: str
    predicate: Predicate
    q_order: Order
    kv_order: Order
    block_cap: Callable[[int], int] | None = None  # seq_len -> an edge beyond which blocks only waste


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _pow2_ceil(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def _pad_slots(positions: np.ndarray, block: int) -> np.ndarray:
    out = np.full(_round_up(max(positions.size, 1), block), -1, dtype=np.int32)
    out[: positions.size] = positions
    return out


def _natural(seq_len: int, block: int) -> np.ndarray:
    return _pad_slots(np.arange(seq_len, dtype=np.int32), block)


def _is_natural(index: np.ndarray, seq_len: int) -> bool:
    return bool(np.array_equal(index[:seq_len], np.arange(seq_len)) and np.all(index[seq_len:] == -1))


def _residue_order(stride: int) -> Order:
    """Slots grouped by position mod stride, each group in position order, padded to a block multiple."""

    def order(seq_len: int, block: int) -> np.ndarray:
        groups = min(stride, seq_len)
        group_len = _group_len(-(-seq_len // stride), block)
        pos = np.arange(seq_len, dtype=np.int32)
        out = np.full(_round_up(groups * group_len, block), -1, dtype=np.int32)
        out[(pos % stride) * group_len + pos // stride] = pos
        return out

    return order


def _group_len(length: int, block: int) -> int:
    """Slots per residue group: a block multiple, unless groups are shorter than a block (a kernel that
    takes no small blocks): then groups are packed, several per block, at a power-of-two pitch so that
    the diagonal blocks are block-diagonal (a few deduplicated partial masks) instead of mostly padding."""
    pitch = _pow2_ceil(length)
    if length >= block or block % pitch:
        return _round_up(length, block)
    return pitch  # == _round_up(length, block) whenever the block is no larger than the pitch


def _summary_order(stride: int, summary: int) -> Order:
    """Only the summary positions (last `summary` of every stride-block), in order: a compact key sequence."""

    def order(seq_len: int, block: int) -> np.ndarray:
        pos = np.arange(seq_len, dtype=np.int32)
        return _pad_slots(pos[pos % stride >= stride - summary], block)

    return order


def _parts(pattern: Pattern) -> list[_Part]:
    """Disjoint components whose union is `pattern`, each in the slot order that makes it block-sparse."""
    if isinstance(pattern, Strided):
        l = pattern.stride
        return [
            _Part("band", lambda i, j: pattern.allowed(i, j) & (i - j < l), _natural, _natural),
            _Part(
                "strided",
                lambda i, j: pattern.allowed(i, j) & (i - j >= l),
                _residue_order(l),
                _residue_order(l),
                block_cap=lambda n: _pow2_ceil(-(-n // l)),
            ),
        ]
    if isinstance(pattern, Fixed):
        l, c = pattern.stride, pattern.summary
        return [
            _Part("block", lambda i, j: pattern.allowed(i, j) & (i // l == j // l), _natural, _natural),
            _Part(
                "summary",
                lambda i, j: pattern.allowed(i, j) & (i // l != j // l),
                _natural,
                _summary_order(l, c),
            ),
        ]
    if isinstance(pattern, Union):
        parts: list[_Part] = []
        for k, sub in enumerate(pattern.parts):
            earlier = pattern.parts[:k]
            for part in _parts(sub):
                parts.append(
                    dataclasses.replace(
                        part, name=f"{sub.name}:{part.name}", predicate=_minus(part.predicate, earlier)
                    )
                )
        return parts
    return [_Part("all", pattern.allowed, _natural, _natural)]


def _minus(predicate: Predicate, earlier: tuple[Pattern, ...]) -> Predicate:
    def restricted(i: Any, j: Any) -> Any:
        result = predicate(i, j)
        for other in earlier:
            result = result & ~other.allowed(i, j)
        return result

    return restricted


def _scan(
    q_index: np.ndarray, kv_index: np.ndarray, predicate: Predicate, bq: int, bk: int
) -> tuple[BlockLayout, int]:
    """Evaluate the predicate block row by block row; keep active blocks and deduplicated partial masks."""
    nqb, nkb = q_index.size // bq, kv_index.size // bk
    k_ok = kv_index >= 0
    masks: list[np.ndarray] = [np.ones((bq, bk), dtype=bool)]
    mask_lookup: dict[bytes, int] = {}
    q_ids: list[int] = []
    k_ids: list[int] = []
    m_ids: list[int] = []
    allowed = 0
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // (bq * kv_index.size))
    for start in range(0, nqb, rows_per_chunk):
        stop = min(nqb, start + rows_per_chunk)
        qi = q_index[start * bq : stop * bq]
        ok = np.asarray(predicate(qi[:, None], kv_index[None, :]), dtype=bool)  # int32 positions
        ok &= (qi >= 0)[:, None] & k_ok[None, :]
        allowed += int(ok.sum())
        blocks = ok.reshape(stop - start, bq, nkb, bk).transpose(0, 2, 1, 3)  # [rows, nkb, bq, bk]
        counts = blocks.sum(axis=(2, 3))
        for r, kb in zip(*np.nonzero(counts)):
            if counts[r, kb] == bq * bk:
                mid = FULL_MASK_ID
            else:
                block = np.ascontiguousarray(blocks[r, kb])
                key = block.tobytes()
                mid = mask_lookup.get(key)
                if mid is None:
                    mid = mask_lookup[key] = len(masks)
                    masks.append(block)
            q_ids.append(start + int(r))
            k_ids.append(int(kb))
            m_ids.append(mid)
    layout = block_layout(
        bq,
        bk,
        nqb,
        nkb,
        q_ids,
        k_ids,
        m_ids,
        np.stack(masks),
        q_positions=q_index,
        k_positions=kv_index,
        allowed=predicate,
    )
    return layout, allowed


def _build(part: _Part, seq_len: int, block: int) -> Component:
    q_index = part.q_order(seq_len, block)
    kv_index = part.kv_order(seq_len, block)
    layout, allowed = _scan(q_index, kv_index, part.predicate, block, block)
    q_slot = np.empty(seq_len, dtype=np.int32)
    valid = q_index >= 0
    q_slot[q_index[valid]] = np.nonzero(valid)[0]
    return Component(part.name, q_index, kv_index, q_slot, layout, allowed)


def _folded_strided(pattern: Strided, seq_len: int, block_size: int) -> Component | None:
    """strided(l)'s far part (i - j >= l, (i - j) % l == 0) without a permutation: with seq_len = T * l,
    q/k/v reshaped [B, T, l * H, D] hold position t * l + g of head h at row t, head g * H + h, and the far
    part is strictly causal attention over the T rows of every such head. One block when T fits in
    `block_size` (a block as long as the whole folded sequence: a power of two of at least
    MIN_FOLDED_BLOCK, which Triton's block shapes and dots take), else blocks of `block_size`; None when
    seq_len is no multiple of l, or T is not blocked so (a padded fold would need a copy)."""
    stride = pattern.stride
    rows = seq_len // stride
    if stride == 1 or seq_len % stride:
        return None
    block = rows if rows <= block_size else block_size
    if rows % block or block < MIN_FOLDED_BLOCK or block & (block - 1):
        return None
    natural = np.arange(rows, dtype=np.int32)
    layout, allowed = _scan(natural, natural, lambda t, u: u < t, block, block)
    return Component("strided", natural, natural, natural.copy(), layout, allowed * stride, fold=stride)


@functools.lru_cache(maxsize=64)
def make_layout(
    pattern: Pattern,
    seq_len: int,
    block_size: int,
    *,
    min_block_size: int = 8,
    max_waste: float = 1.75,
) -> PatternLayout:
    """Block tables of `pattern` at `seq_len` (see the module docstring). Cached: patterns are hashable."""
    if seq_len < 1 or block_size < 1:
        raise UserError(f"layout needs seq_len >= 1 and block_size >= 1, got {seq_len}, {block_size}")
    floor = min(min_block_size, block_size)
    folded = _folded_strided(pattern, seq_len, block_size) if isinstance(pattern, Strided) else None
    parts = _parts(pattern)[:1] if folded is not None else _parts(pattern)  # folded: the band stays
    blocks = [max(floor, min(block_size, p.block_cap(seq_len))) if p.block_cap else block_size for p in parts]
    comps = [_build(p, seq_len, b) for p, b in zip(parts, blocks)]
    shrinkable = [True] * len(parts)
    while sum(c.layout.computed_pairs for c in comps) > max_waste * sum(c.allowed_pairs for c in comps):
        candidates = [
            k for k in range(len(parts)) if shrinkable[k] and blocks[k] % 2 == 0 and blocks[k] // 2 >= floor
        ]
        if not candidates:
            break
        k = max(candidates, key=lambda k: comps[k].layout.computed_pairs - comps[k].allowed_pairs)
        smaller = _build(parts[k], seq_len, blocks[k] // 2)
        if smaller.layout.computed_pairs >= comps[k].layout.computed_pairs:
            shrinkable[k] = False
            continue
        blocks[k] //= 2
        comps[k] = smaller
    comps += [folded] if folded is not None else []
    return PatternLayout(pattern.name, seq_len, tuple(c for c in comps if c.allowed_pairs))
