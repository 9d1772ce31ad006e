"""The inner critic's ROC AUC on inputs whose answer is known, checked against the pairwise definition."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from musenet_jax.critic.auc import average_ranks, roc_auc


def pairwise_auc(scores, labels) -> float:
    """The definition: over all (positive, negative) pairs, 1 if the positive scores higher, 1/2 on a tie."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize(
    "scores,labels,expected",
    [
        ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),  # the classic worked example
        ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 1.0),  # perfectly separated
        ([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], 0.0),  # perfectly wrong
        ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], 0.5),  # all tied: chance
        ([0.3, 0.3, 0.7], [0, 1, 1], 0.75),  # one tied pair counts one half
    ],
)
def test_auc_on_known_inputs(scores, labels, expected):
    assert roc_auc(np.array(scores), np.array(labels)) == pytest.approx(expected)


def test_average_ranks_share_ties():
    np.testing.assert_array_equal(average_ranks(np.array([10, 20, 20, 5])), [2.0, 3.5, 3.5, 1.0])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=2, max_size=30).filter(
        lambda rows: 0 < sum(y for _, y in rows) < len(rows)
    )
)
def test_auc_equals_the_pairwise_definition(rows):
    scores, labels = zip(*rows)  # small integer scores: many ties
    assert roc_auc(np.array(scores, float), np.array(labels)) == pytest.approx(pairwise_auc(scores, labels))


@pytest.mark.parametrize(
    "scores,labels,message",
    [
        ([0.1, 0.2], [1, 1], "at least one positive and one negative"),
        ([0.1, np.nan], [0, 1], "finite"),
        ([0.1, 0.2, 0.3], [0, 1], "3 scores for 2 labels"),
    ],
)
def test_auc_refuses_what_it_cannot_score(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        roc_auc(np.array(scores), np.array(labels))
