"""How many tokens a piece of a requested length may take.

A fixed token budget cut long multitrack pieces short (240 s with ten instruments stopped at 39 s on
2048 tokens), so by default the budget follows from the seconds asked for and the instruments: real
multitrack music runs at about 50 tokens per second, a busy ten-family piece at well over 100. The
rate here is deliberately generous; a budget is only a ceiling, sampling stops at the requested length.
"""

from __future__ import annotations

import math

TOKENS_PER_SECOND_BASE = 16  # waits and a sparse melody
TOKENS_PER_SECOND_PER_FAMILY = 24  # note-ons and note-offs per instrument family playing
MIN_BUDGET = 64


def tokens_per_second(num_families: int) -> int:
    """A conservative ceiling on the token rate of music with `num_families` instrument families."""
    return TOKENS_PER_SECOND_BASE + TOKENS_PER_SECOND_PER_FAMILY * max(1, num_families)


def token_budget(seconds: float, num_families: int, max_new_tokens: int = 0) -> int:
    """`max_new_tokens` when the user set one (> 0); otherwise enough tokens for `seconds` of music."""
    if max_new_tokens > 0:
        return max_new_tokens
    return max(MIN_BUDGET, math.ceil(seconds * tokens_per_second(num_families)))
