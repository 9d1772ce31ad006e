"""Patterns, their dense masks and their block layouts agree; layouts stay close to the pattern's density."""

import jax.numpy as jnp
import numpy as np
import pytest

from musenet_jax.attention import patterns as P
from musenet_jax.attention.layouts import FULL_MASK_ID, make_layout
from musenet_jax.config import bundled_config_names, load_config
from musenet_jax.errors import UserError


def _strided_by_hand(n, l):
    return np.array([[j <= i and (i - j < l or (i - j) % l == 0) for j in range(n)] for i in range(n)])


def _fixed_by_hand(n, l, c):
    return np.array([[j <= i and (j // l == i // l or j % l >= l - c) for j in range(n)] for i in range(n)])


def test_predicates_match_the_sparse_transformer_definitions():
    assert (P.strided(5).mask(37) == _strided_by_hand(37, 5)).all()
    assert (P.fixed(8, 3).mask(37) == _fixed_by_hand(37, 8, 3)).all()
    merged = P.union(P.strided(5), P.fixed(8, 3))
    assert (merged.mask(37) == (_strided_by_hand(37, 5) | _fixed_by_hand(37, 8, 3))).all()


def test_predicate_is_the_same_on_jax_arrays():
    pos = jnp.arange(50)
    for pattern in (P.strided(7), P.fixed(8, 2), P.union(P.strided(7), P.fixed(8, 2))):
        assert (np.asarray(pattern.allowed(pos[:, None], pos[None, :])) == pattern.mask(50)).all()


CASES = [
    (P.strided(16), 128, 16),
    (P.strided(16), 100, 16),  # not a multiple of the block nor of the stride
    (P.strided(8), 130, 32),  # stride below the block
    (P.strided(32), 40, 16),  # fewer than two strides
    (P.fixed(16, 4), 128, 16),
    (P.fixed(16, 4), 77, 16),
    (P.fixed(8, 8), 64, 16),  # summary = whole block: full causal
    (P.union(P.strided(8), P.fixed(16, 4)), 90, 16),
]


@pytest.mark.parametrize("pattern,n,block", CASES, ids=[f"{p.name}-n{n}-b{b}" for p, n, b in CASES])
def test_block_tables_cover_exactly_the_mask(pattern, n, block):
    layout = make_layout(pattern, n, block)
    assert (layout.coverage() == pattern.mask(n)).all()  # every allowed pair exactly once, nothing else
    assert layout.allowed_pairs == pattern.mask(n).sum()
    for comp in layout.components:
        lay = comp.layout
        assert lay.masks[FULL_MASK_ID].all() and not lay.masks[1:].all(axis=(1, 2)).any()
        rows = n // comp.fold  # a folded component's slots are rows of l positions (Component.fold)
        assert (comp.q_index[comp.q_slot] == np.arange(rows)).all()
        assert sorted(comp.q_index[comp.q_index >= 0]) == list(range(rows))
        coo = set(zip(lay.q_block_ids.tolist(), lay.k_block_ids.tolist(), lay.mask_ids.tolist()))
        assert len(coo) == lay.num_active
        by_row = {
            (r, int(lay.kv_indices[r, t]), int(lay.kv_mask_ids[r, t]))
            for r in range(lay.num_q_blocks)
            for t in range(lay.kv_counts[r])
        }
        by_col = {
            (int(lay.q_indices[c, t]), c, int(lay.q_mask_ids[c, t]))
            for c in range(lay.num_k_blocks)
            for t in range(lay.q_counts[c])
        }
        assert by_row == coo == by_col
        for r in range(lay.num_q_blocks):  # per-row lists ascend; padding repeats the last index
            row = lay.kv_indices[r]
            assert (np.diff(row[: lay.kv_counts[r]]) > 0).all()
            if 0 < lay.kv_counts[r] < row.size:
                assert (row[lay.kv_counts[r] :] == row[lay.kv_counts[r] - 1]).all()
        # The masks again from positions (what the GPU kernels compute instead of loading them).
        for qb, kb, mid in coo:
            i = lay.q_positions[qb * lay.block_q : (qb + 1) * lay.block_q][:, None]
            j = lay.k_positions[kb * lay.block_k : (kb + 1) * lay.block_k][None, :]
            from_positions = (i >= 0) & (j >= 0) & np.asarray(lay.allowed(i, j), bool)
            assert (from_positions == lay.masks[mid]).all(), (comp.name, qb, kb)


def test_strided_far_part_is_block_sparse_after_the_permutation():
    n, l = 1000, 32  # n no multiple of l: the far part is gathered into residue order
    layout = make_layout(P.strided(l), n, 32, min_block_size=32, max_waste=100.0)
    far = next(c for c in layout.components if c.name == "strided")
    # l groups of ceil(n / l) slots each, strictly causal inside: one 32 x 32 diagonal block per group.
    assert far.fold == 1 and far.layout.num_active == l
    assert not (far.layout.q_block_ids != far.layout.k_block_ids).any()


def test_strided_far_part_folds_into_heads_when_n_is_a_multiple_of_the_stride():
    """n = T * l: the far part is one strictly causal T x T problem per (residue, head), a reshape away."""
    n, l = 1024, 32
    far = next(c for c in make_layout(P.strided(l), n, 128).components if c.name == "strided")
    assert far.fold == l and far.layout.num_q_blocks == far.layout.num_k_blocks == 1
    assert far.layout.block_q == n // l and far.allowed_pairs == l * (n // l) * (n // l - 1) // 2
    assert far.layout.masks[far.layout.mask_ids[0]].sum() == (n // l) * (n // l - 1) // 2
    tiled = next(c for c in make_layout(P.strided(8), n, 32).components if c.name == "strided")
    assert tiled.fold == 8 and tiled.layout.block_q == 32 and tiled.layout.num_q_blocks == n // 8 // 32


@pytest.mark.parametrize("config_name", bundled_config_names())
def test_layout_density_within_2x_of_pattern_density_for_the_bundled_configs(config_name):
    model = load_config(config_name).model
    patterns = [P.by_name(name, stride=model.stride, summary=model.fixed_summary) for name in model.patterns]
    for pattern in [*patterns, P.union(*patterns)]:
        layout = make_layout(pattern, model.context, model.block_size)
        assert layout.pattern_density < layout.density <= 2 * layout.pattern_density, pattern.name


def test_bad_patterns_are_user_errors():
    with pytest.raises(UserError, match="valid: strided"):
        P.by_name("stridd", stride=4, summary=2)
    with pytest.raises(UserError):
        P.fixed(8, 9)
    with pytest.raises(UserError):
        P.strided(0)
    assert P.union(P.strided(4), P.union(P.strided(4), P.fixed(4, 1))) == P.Union(
        (P.strided(4), P.fixed(4, 1))
    )


def test_layer_patterns_interleave_merge_and_split():
    kw = dict(stride=8, summary=2)
    names = ("strided", "fixed")
    assert [P.layer_patterns(names, "interleave", layer, **kw) for layer in range(3)] == [
        (P.strided(8),),
        (P.fixed(8, 2),),
        (P.strided(8),),
    ]
    assert P.layer_patterns(names, "merge", 5, **kw) == (P.union(P.strided(8), P.fixed(8, 2)),)
    assert P.layer_patterns(names, "head_split", 5, **kw) == (P.strided(8), P.fixed(8, 2))
    with pytest.raises(UserError, match="valid: merge"):
        P.layer_patterns(names, "merged", 0, **kw)
