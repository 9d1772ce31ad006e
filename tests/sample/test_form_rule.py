"""Grammar rule 13 (form): while a planned repeat is under way, the bonus goes to what the piece played `lag`
steps earlier at this point (its next unplayed event, else the wait to its next event); plans are drawn per
row from the composer's; and with a strong bonus an untrained model plays its prompt again where the plan
says, which it does not do without."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from musenet_jax.config import load_config
from musenet_jax.encoding.families import FAMILIES
from musenet_jax.encoding.timing import token_times
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.model.transformer import MuseNet
from musenet_jax.sample.conditioning import Request
from musenet_jax.sample.config import SampleConfig
from musenet_jax.sample.form import NO_TOKEN, current_lag, draw_plans, form_bonus, reprise_token
from musenet_jax.sample.grammar import GrammarTables, replay
from musenet_jax.sample.sampler import Sampler

TOKENIZER = Tokenizer()
VOCAB = TOKENIZER.vocab
PIANO = FAMILIES.index("piano")
TABLES = GrammarTables.from_vocab(VOCAB, form_bias=2.0)
TUNE = [67, 64, 65, 62, 60]


def melody(pitches: list[int], steps: int = 20) -> list[int]:
    """Each note struck, held `steps`, released: the tokenizer's order (the off comes before the next on)."""
    tokens = []
    for pitch in pitches:
        tokens += [
            int(VOCAB.note_ids(PIANO, 2, pitch)),
            VOCAB.wait_id(steps),
            int(VOCAB.note_ids(PIANO, 0, pitch)),
        ]
    return tokens


@jax.jit
def _suggest(ids: jax.Array, times: jax.Array, length: jax.Array, lag: jax.Array) -> jax.Array:
    return reprise_token(ids, times, length, replay(ids, TABLES), lag, TABLES)


def suggestion(tokens: list[int], lag: int) -> int:
    """Rule 13's token after `tokens` (padded to one shape: pad changes no state, so one compile serves)."""
    ids = np.full(64, VOCAB.pad_id, np.int32)
    ids[: len(tokens)] = tokens
    times = token_times(ids, VOCAB)
    return int(_suggest(ids[None], times[None], jnp.asarray(len(tokens)), jnp.asarray([lag]))[0])


def test_the_bonus_names_what_was_played_lag_steps_ago_event_by_event_then_the_wait():
    tokens = melody(TUNE)  # five notes of 20 steps: the last note-off lands at step 100
    assert suggestion(tokens, 100) == VOCAB.note_ids(PIANO, 2, 67)  # step 0 played G4
    tokens.append(int(VOCAB.note_ids(PIANO, 2, 67)))
    assert suggestion(tokens, 100) == VOCAB.wait_id(20)  # nothing left at step 0: wait for step 20's events
    tokens.append(VOCAB.wait_id(20))
    assert suggestion(tokens, 100) == VOCAB.note_ids(PIANO, 0, 67)  # step 20: G4 off, then E4 on
    tokens.append(int(VOCAB.note_ids(PIANO, 0, 67)))
    assert suggestion(tokens, 100) == VOCAB.note_ids(PIANO, 2, 64)
    tokens.append(int(VOCAB.note_ids(PIANO, 2, 60)))  # the model played C4 instead: E4's id is above it
    assert suggestion(tokens, 100) == VOCAB.note_ids(PIANO, 2, 64)
    tokens.append(int(VOCAB.note_ids(PIANO, 2, 65)))  # F4 is above E4: E4 can no longer come at this step
    assert suggestion(tokens, 100) == VOCAB.wait_id(20)  # so the repeat goes on at the next time
    assert suggestion(tokens, 0) == NO_TOKEN  # no repeat under way


def test_between_events_the_bonus_names_the_wait_to_the_next_and_nothing_past_the_last():
    tokens = melody(TUNE)  # now at step 100
    assert suggestion(tokens, 95) == VOCAB.wait_id(15)  # step 5 had nothing: its next events are at 20
    assert suggestion(tokens[:2], 5) == NO_TOKEN  # at step 20, step 15 has nothing after it so far


def test_the_bonus_is_one_token_and_nothing_without_one():
    shown = np.asarray(form_bonus(jnp.asarray([VOCAB.wait_id(3), NO_TOKEN]), VOCAB.size, 2.0))
    assert shown[0, VOCAB.wait_id(3)] == 2.0 and shown[0].sum() == 2.0 and not shown[1].any()


def test_the_repeat_under_way_sets_the_lag():
    plan = jnp.asarray([[[100, 100, 200], [300, 50, 360]], [[0, 0, 0], [0, 0, 0]]], jnp.int32)
    for time, lags in ((99, [0, 0]), (100, [100, 0]), (199, [100, 0]), (200, [0, 0]), (330, [50, 0])):
        np.testing.assert_array_equal(current_lag(plan, jnp.asarray([time, time])), lags)


def test_each_row_draws_its_composers_plans_one_after_another_until_they_cover_it():
    plans = {
        "folk": ((300, ((100, 100, 200),)), (1000, ((50, 20, 90), (300, 100, 400)))),
        "bach": ((500, ()),),
    }
    composers = ["folk"] * 8 + ["bach", "mozart", None]
    drawn = draw_plans(plans, composers, [250] * 11, seed=0)
    assert drawn.shape[0] == 11 and not drawn[8:].any()  # bach's piece had no repeat; mozart has no plans
    firsts = {tuple(row[0]) for row in drawn[:8]}
    assert firsts == {(100, 100, 200), (50, 20, 90)}  # both plans drawn among eight rows
    for row in drawn[:8]:
        if tuple(row[0]) == (100, 100, 200):  # a 300-step tune covers 250 steps: nothing follows it
            assert not row[1:].any()
    np.testing.assert_array_equal(drawn, draw_plans(plans, composers, [250] * 11, seed=0))
    longer = draw_plans({"folk": plans["folk"][:1]}, ["folk"], [1000], seed=0)[0]
    assert [tuple(r) for r in longer if r.any()] == [(100 + t, 100, 200 + t) for t in (0, 300, 600, 900)]
    with pytest.raises(ValueError, match="sample.form_bias must be finite and >= 0"):
        SampleConfig(form_bias=-1.0)


def onsets(ids: np.ndarray) -> set[tuple[int, int]]:
    events = TOKENIZER.ids_to_events(ids)
    return set(zip(np.rint(events.start_s / TOKENIZER.step_s).astype(int).tolist(), events.pitch.tolist()))


@pytest.mark.slow
def test_a_strong_form_bias_makes_an_untrained_model_play_its_prompt_again_where_the_plan_says():
    cfg = load_config("tiny", ["model.d_model=32", "model.context=64"])
    model = MuseNet(cfg.model, VOCAB.size, rngs=nnx.Rngs(0))
    prefix = TOKENIZER.prefix("bach", np.array([PIANO]))
    families = np.zeros(len(FAMILIES), bool)
    families[PIANO] = True
    request = Request(
        np.concatenate([prefix, melody(TUNE)]).astype(np.int32), len(prefix), 250, 250, families
    )
    plans = {"bach": ((250, ((100, 100, 200),)),)}  # steps 100-200 play steps 0-100 again
    played = {}
    for strength in (0.0, 30.0):
        tables = GrammarTables.from_vocab(VOCAB, form_bias=strength)
        sampler = Sampler(model, TOKENIZER, SampleConfig(), tables, plans)
        played[strength] = [onsets(c.ids) for c in sampler.sample([request] * 4, max_new_tokens=120, seed=3)]
    given = {(t + 100, p) for t, p in onsets(request.prompt)}
    for notes in played[30.0]:
        assert {(t, p) for t, p in notes if 100 <= t < 200} == given  # the tune again, note for note
    assert all({(t, p) for t, p in notes if 100 <= t < 200} != given for notes in played[0.0])
