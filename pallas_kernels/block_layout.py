"""The block-table format the kernels consume: one block-sparse attention call, as plain arrays.

The kernels never see a pattern; `musenet_jax.attention.layouts` derives these tables from one.

`BlockLayout` (numpy arrays, all int32 unless noted; `A` = active blocks):
  block_q, block_k, num_q_blocks, num_k_blocks: slot sequences are num_*_blocks * block_* long.
  q_block_ids[A], k_block_ids[A], mask_ids[A]: every active block, sorted by (q block, k block).
  masks: bool [num_masks, block_q, block_k], row = query slot. masks[0] is all True and means "full
      block" (mask_id == FULL_MASK_ID == 0); partial blocks have mask_id >= 1 and must apply their mask.
      Padding slots are never allowed, so they only ever appear inside partial blocks.
  Forward tables, per query block r (splash-attention style):
      kv_counts[num_q_blocks], kv_indices[num_q_blocks, W], kv_mask_ids[num_q_blocks, W]:
      the first kv_counts[r] entries are the active key blocks of row r, ascending; later entries
      repeat the last valid index (0 for an empty row) with mask id 0 and must be skipped by count.
  Transposed tables for the dk/dv pass, per key block: q_counts, q_indices, q_mask_ids, same rules;
      the mask id still refers to the [block_q, block_k] mask (not transposed).
  The same masks from positions, for kernels that compute a partial block's mask instead of loading it:
      q_positions[num_q_blocks * block_q], k_positions[num_k_blocks * block_k]: the position each slot
      holds (-1 = padding), and allowed(i, j): whether position i may see position j, elementwise over
      broadcast int32 arrays with integer operators only (a pure function of positions, so it traces in
      any kernel). masks[mask_id] == allowed(q_pos, k_pos) & both slots real, for every active block.

Component contract: a kernel takes q (already scaled by 1/sqrt(head_dim)), k, v in slot order and a
`BlockLayout`, and returns the normalized output and the log-sum-exp per row (-inf on a row with no
allowed key).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

FULL_MASK_ID = 0
# Finite, so a row whose keys are all masked gives zeros instead of NaNs (and NaN-free gradients).
MASKED_SCORE = -1e30


@dataclasses.dataclass(frozen=True, eq=False)
class BlockLayout:
    """Active blocks of one component, as a flat sorted list and as padded per-row / per-column tables."""

    block_q: int
    block_k: int
    num_q_blocks: int
    num_k_blocks: int
    q_block_ids: np.ndarray
    k_block_ids: np.ndarray
    mask_ids: np.ndarray
    masks: np.ndarray
    kv_counts: np.ndarray
    kv_indices: np.ndarray
    kv_mask_ids: np.ndarray
    q_counts: np.ndarray
    q_indices: np.ndarray
    q_mask_ids: np.ndarray
    q_positions: np.ndarray
    k_positions: np.ndarray
    allowed: Callable[[Any, Any], Any]

    @property
    def num_active(self) -> int:
        return int(self.q_block_ids.size)

    @property
    def computed_pairs(self) -> int:
        return self.num_active * self.block_q * self.block_k


def padded_table(groups: np.ndarray, values: np.ndarray, mask_ids: np.ndarray, num_groups: int):
    """Per-group lists (input sorted by group) padded to a common width by repeating the last entry."""
    counts = np.bincount(groups, minlength=num_groups).astype(np.int32)
    width = max(1, int(counts.max(initial=0)))
    indices = np.zeros((num_groups, width), dtype=np.int32)
    ids = np.full((num_groups, width), FULL_MASK_ID, dtype=np.int32)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for g in range(num_groups):
        n = counts[g]
        if n:
            indices[g, :n] = values[starts[g] : starts[g] + n]
            indices[g, n:] = indices[g, n - 1]
            ids[g, :n] = mask_ids[starts[g] : starts[g] + n]
    return counts, indices, ids


def block_layout(
    block_q: int,
    block_k: int,
    num_q_blocks: int,
    num_k_blocks: int,
    q_block_ids: np.ndarray,
    k_block_ids: np.ndarray,
    mask_ids: np.ndarray,
    masks: np.ndarray,
    *,
    q_positions: np.ndarray,
    k_positions: np.ndarray,
    allowed: Callable[[Any, Any], Any],
) -> BlockLayout:
    """The full tables from the flat list of active blocks (sorted by query block, then key block)."""
    q_arr, k_arr, m_arr = (np.asarray(x, dtype=np.int32) for x in (q_block_ids, k_block_ids, mask_ids))
    kv_counts, kv_indices, kv_mask_ids = padded_table(q_arr, k_arr, m_arr, num_q_blocks)
    by_key = np.lexsort((q_arr, k_arr))
    q_counts, q_indices, q_mask_ids = padded_table(k_arr[by_key], q_arr[by_key], m_arr[by_key], num_k_blocks)
    return BlockLayout(
        block_q=block_q, block_k=block_k, num_q_blocks=num_q_blocks, num_k_blocks=num_k_blocks,
        q_block_ids=q_arr, k_block_ids=k_arr, mask_ids=m_arr, masks=np.asarray(masks, dtype=bool),
        kv_counts=kv_counts, kv_indices=kv_indices, kv_mask_ids=kv_mask_ids,
        q_counts=q_counts, q_indices=q_indices, q_mask_ids=q_mask_ids,
        q_positions=np.asarray(q_positions, np.int32), k_positions=np.asarray(k_positions, np.int32),
        allowed=allowed,
    )  # fmt: skip
