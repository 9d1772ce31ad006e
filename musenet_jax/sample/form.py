"""Grammar rule 13, form: a candidate brings passages back where a real piece of its composer did.

Each candidate draws form plans from its composer's training pieces (`data/form_plans.py`, kept in the
note facts), pieces without repeats included, so its form is one the data has, as often as the data has
it; a request longer than the drawn piece draws the next one to follow it (a set of tunes, not one tune
stretched). While one of the plan's repeats is under way (from its `start` to its `end`), the token the piece
played `lag` steps earlier at this point gains `form_bias` nats: the next event of that earlier moment
not yet passed in this step (events of a step come in id order), or, when it has none left, the wait to
its next event. The model may still play otherwise; the earlier passage is found again by time, not by
a pointer, so a changed note does not derail what follows. The passage may lie outside the model's
context window (the sampler keeps every token). Requests with given notes (infilling, accompaniment)
take their form from those notes and draw no plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from musenet_jax.data.form_plans import Plan
from musenet_jax.sample.grammar import GrammarState, GrammarTables

NO_TOKEN = -1
LATER = np.iinfo(np.int32).max  # the time of an event that is not there
PLANNED_REPEATS = 16  # repeats a candidate's plan holds (two minutes of folk tunes: about eight)


def draw_plans(
    plans: Mapping[str, Sequence[Plan]], composers: Sequence[str | None], lengths: Sequence[int], seed: int
) -> np.ndarray:
    """int32 [rows, PLANNED_REPEATS, 3]: each row's (start, lag, end) repeats, from its composer's plans drawn
    one after another, each shifted to begin where the last one's piece ended, until they cover the row's
    `lengths` (steps; a request longer than a tune becomes a set of tunes, each with its own form); rows
    padded with empty repeats (start = end = 0), all empty where the composer has no plans (None: draws
    none)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(composers), PLANNED_REPEATS, 3), np.int32)
    for row, (composer, length) in enumerate(zip(composers, lengths)):
        options = plans.get(composer, ()) if composer is not None else ()
        planned, offset = [], 0
        while options and offset < length and len(planned) < PLANNED_REPEATS:
            piece_length, repeats = options[int(rng.integers(len(options)))]
            planned += [(start + offset, lag, end + offset) for start, lag, end in repeats]
            offset += piece_length
        planned = planned[:PLANNED_REPEATS]
        if planned:  # none: the row is through-composed
            out[row, : len(planned)] = planned
    return out


def current_lag(plan: jax.Array, time: jax.Array) -> jax.Array:
    """int32 [B]: the lag of the repeat under way at `time` [B] in each row's plan [B, R, 3]; 0 for none."""
    start, lag, end = plan[..., 0], plan[..., 1], plan[..., 2]
    under_way = (start <= time[:, None]) & (time[:, None] < end)
    return jnp.max(jnp.where(under_way, lag, 0), axis=1)


def reprise_token(
    tokens: jax.Array,
    times: jax.Array,
    length: jax.Array,
    state: GrammarState,
    lag: jax.Array,
    tables: GrammarTables,
) -> jax.Array:
    """int32 [B]: the token that plays on what the piece played `lag` [B] steps before now (NO_TOKEN where
    no repeat is under way or the earlier moment has nothing left to play); `tokens`, `times` [B, H] are
    the piece so far, `length` of them written."""
    written = (jnp.arange(tokens.shape[1]) < length)[None]
    event = jnp.asarray(tables.is_on | tables.is_off)[tokens] & written
    then = (state.time - lag)[:, None]
    unplayed = jnp.asarray(tables.order_key)[tokens] > state.last_key[:, None]
    here = event & (times == then) & unplayed
    at_then = jnp.take_along_axis(tokens, jnp.argmax(here, axis=1)[:, None], axis=1)[:, 0]
    next_time = jnp.min(jnp.where(event & (times > then), times, LATER), axis=1)
    gap = jnp.clip(next_time - then[:, 0], 1, tables.max_wait)
    wait = jnp.where(next_time < LATER, tables.wait_base + gap - 1, NO_TOKEN)
    token = jnp.where(jnp.any(here, axis=1), at_then, wait)
    return jnp.where(lag > 0, token, NO_TOKEN).astype(jnp.int32)


def form_bonus(token: jax.Array, vocab_size: int, bias: float) -> jax.Array:
    """float32 [B, V]: `bias` on each row's reprise `token` [B], 0 elsewhere (and everywhere for NO_TOKEN)."""
    return jnp.where(jnp.arange(vocab_size)[None] == token[:, None], bias, 0.0).astype(jnp.float32)
