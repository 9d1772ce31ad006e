"""Grammar rule 12 (parts): a requested family the model would leave silent plays, and rests at most
`part_rest_s` at a time in the new music; with the rule off it stays silent."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from musenet_jax.config import load_config
from musenet_jax.encoding.families import FAMILIES
from musenet_jax.encoding.timing import duration_steps
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.encoding.vocab import KIND_NOTE_ON
from musenet_jax.model.transformer import MuseNet
from musenet_jax.sample.conditioning import make_request
from musenet_jax.sample.config import SampleConfig
from musenet_jax.sample.grammar import (
    GrammarState,
    GrammarTables,
    advance,
    allowed_tokens,
    family_sounding,
    heard_at,
    owed_parts,
)
from musenet_jax.sample.sampler import Sampler

TOKENIZER = Tokenizer()
VOCAB = TOKENIZER.vocab
STRINGS = FAMILIES.index("strings")
STRINGS_ONS = np.flatnonzero((VOCAB.token_kinds == KIND_NOTE_ON) & (VOCAB.note_family == STRINGS))


@pytest.fixture(scope="module")
def model_without_strings():
    """An untrained model whose strings note-ons are 30 nats down: a family it was never shown."""
    cfg = load_config("tiny", ["model.d_model=32", "model.context=64"])
    model = MuseNet(cfg.model, VOCAB.size, rngs=nnx.Rngs(0))
    model.head.bias.value = model.head.bias.value.at[STRINGS_ONS].set(-30.0)
    return model


def strings_notes(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(onsets, ends) in steps of the strings' notes."""
    events = TOKENIZER.ids_to_events(ids)
    strings = events.select(events.family == STRINGS)
    return tuple(np.rint(t / TOKENIZER.step_s).astype(int) for t in (strings.start_s, strings.end_s))


def longest_rest(onsets: np.ndarray, ends: np.ndarray, start: int, stop: int) -> int:
    """The longest stretch of [start, stop) in which no strings note sounds."""
    sounding = np.zeros(stop - start + 1, bool)
    for on, end in zip(onsets, ends):
        sounding[max(on - start, 0) : max(end - start, 0) + 1] = True
    rests = np.diff(np.flatnonzero(np.concatenate([[True], sounding, [True]]))) - 1
    return int(rests.max())


def test_a_due_part_allows_only_its_note_ons_and_sounding_keeps_it_heard():
    tables = GrammarTables.from_vocab(VOCAB)
    state = GrammarState.initial(2, tables)
    families = jnp.ones((2, len(FAMILIES)), bool)
    allowed = allowed_tokens(state, tables, families)
    due = jnp.zeros((2, len(FAMILIES)), bool).at[0, STRINGS].set(True)
    parts = np.asarray(owed_parts(allowed, tables, due))
    assert set(np.flatnonzero(parts[0])) == set(STRINGS_ONS)  # due: a strings note-on, nothing else
    np.testing.assert_array_equal(parts[1], np.asarray(allowed)[1])  # nothing due: as the rules allow
    heard = jnp.zeros((2, len(FAMILIES)), jnp.int32)
    tokens = [("strings:v2:C4", "piano:v2:C4"), (VOCAB.wait_id(50), VOCAB.wait_id(50))]
    for pair in tokens:  # a held strings note, a piano note; then a wait of 50 steps
        ids = jnp.array([VOCAB.id(t) if isinstance(t, str) else t for t in pair])
        after = advance(state, ids, tables, jnp.array([True, True]))
        heard, state = heard_at(heard, family_sounding(state, tables), after, ids, tables), after
    heard = np.asarray(heard)
    assert heard[0, STRINGS] == 50 and heard[1, STRINGS] == 0  # held through the wait; never played
    assert heard[1, FAMILIES.index("piano")] == 50


@pytest.mark.slow
def test_a_requested_family_the_model_never_plays_keeps_playing_with_short_rests(model_without_strings):
    request = make_request(TOKENIZER, "bach", "piano,strings", 3.0)
    rest = round(0.5 / TOKENIZER.step_s)
    notes = {}
    for rest_s in (0.0, 0.5):
        sampler = Sampler(model_without_strings, TOKENIZER, SampleConfig(part_rest_s=rest_s))
        candidates = sampler.sample([request] * 4, max_new_tokens=300, seed=4)
        notes[rest_s] = [(strings_notes(c.ids), duration_steps(c.ids, VOCAB)) for c in candidates]
        for cand in candidates:
            assert duration_steps(cand.ids, VOCAB) <= request.target_steps
    assert all(len(onsets) == 0 for (onsets, _), _ in notes[0.0])  # the control: off, the strings never play
    for (onsets, ends), length in notes[0.5]:
        assert len(onsets) >= 1 and onsets.min() <= rest
        assert longest_rest(onsets, ends, 0, length) <= rest + 1  # the last wait may end a step after
