"""The token budget follows from the requested seconds unless the user caps it."""

from __future__ import annotations

import pytest

from musenet_jax.config import load_config
from musenet_jax.errors import UserError
from musenet_jax.sample.budget import token_budget, tokens_per_second


def test_budget_covers_busy_music_for_the_requested_length():
    # 240 s of ten instruments at a real ~50 tokens/s is 12,000 tokens: the derived budget leaves room
    assert token_budget(240, 10) >= 240 * 100
    assert token_budget(240, 10) > token_budget(240, 1) > token_budget(10, 1)
    assert tokens_per_second(0) == tokens_per_second(1)


def test_an_explicit_cap_wins():
    assert token_budget(240, 10, max_new_tokens=2048) == 2048


def test_config_defaults_to_derived_and_refuses_absurd_lengths():
    assert load_config("small").sample.max_new_tokens == 0
    with pytest.raises(UserError, match="sample.seconds must be positive and at most 3600"):
        load_config("tiny", ["sample.seconds=100000"])
    with pytest.raises(UserError, match="sample.max_new_tokens must be >= 0"):
        load_config("tiny", ["sample.max_new_tokens=-1"])
