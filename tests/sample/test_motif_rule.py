"""Grammar rule 11 (motif): the state's melody line is the decoded piece's `melody_line`, token by token and
by replay; the bonus goes to the note that followed the line's last notes the last time they were played, only
while that pitch can still be the step's top note; and it makes a sampler bring a prompt's tune back."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from midi_corpus import packaged_midi_files

from musenet_jax.config import load_config
from musenet_jax.encoding.families import FAMILIES
from musenet_jax.encoding.melody import melody_line
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.model.transformer import MuseNet
from musenet_jax.sample.conditioning import Request
from musenet_jax.sample.config import SampleConfig
from musenet_jax.sample.grammar import (
    MOTIF_CONTEXT,
    MOTIF_HISTORY,
    GrammarState,
    GrammarTables,
    advance,
    close_sequence,
    motif_bonus,
    replay,
)
from musenet_jax.sample.sampler import Sampler

TOKENIZER = Tokenizer()
VOCAB = TOKENIZER.vocab
PIANO = FAMILIES.index("piano")
TUNE = [60, 62, 64, 65, 67, 60, 62, 64]  # C D E F G, then C D E again: F followed C D E last time
NAMES = {60: "C4", 62: "D4", 64: "E4", 65: "F4", 67: "G4", 69: "A4"}


def step(state, tables, token: str | int):
    token_id = VOCAB.id(token) if isinstance(token, str) else token
    return advance(state, jnp.array([token_id]), tables, jnp.array([True]))


def play(tables, pitches: list[int]) -> GrammarState:
    """Each note struck and released after a short wait, as the tokenizer writes a melody."""
    state = GrammarState.initial(1, tables)
    for pitch in pitches:
        state = step(step(state, tables, f"piano:v2:{NAMES[pitch]}"), tables, VOCAB.wait_id(10))
        state = step(state, tables, f"piano:v0:{NAMES[pitch]}")
    return state


def bonus(state, tables) -> np.ndarray:
    return np.asarray(motif_bonus(state, tables))[0]


@pytest.mark.slow
def test_the_states_melody_line_is_the_decoded_pieces_token_by_token_and_by_replay():
    """A real four-family piece: within a step note-ons come in id order (family, velocity, pitch), not pitch
    order, so the line must keep each step's highest melodic note, not its first."""
    tables = GrammarTables.from_vocab(VOCAB, motif_bias=1.0)
    ids = TOKENIZER.encode(next(p for p in packaged_midi_files() if p.name == "test04.mid"))
    cut = 4000  # about 500 melody notes: the whole line still fits the history
    ids = ids[:cut]
    one = jax.jit(lambda state, token: advance(state, token, tables, jnp.array([True])))
    state = GrammarState.initial(1, tables)
    for token in ids:
        state = one(state, jnp.array([token]))
    first_melodic, new_step = [], True  # the line a tracker of each step's first melodic note-on would keep
    for token in ids:
        if tables.melody_pitch[token] >= 0 and new_step:
            first_melodic.append(int(tables.melody_pitch[token]))
        new_step = bool(tables.is_wait[token]) or (new_step and tables.melody_pitch[token] < 0)
    closed = close_sequence(ids, np.asarray(state.busy_until[0]), tables)
    expected = melody_line(TOKENIZER.ids_to_events(closed))
    assert MOTIF_CONTEXT * 2 < len(expected) <= MOTIF_HISTORY
    np.testing.assert_array_equal(state.melody(), expected)
    assert first_melodic != expected.tolist()  # the piece has steps whose first note is not the top one
    replayed = replay(jnp.asarray(ids)[None], tables)
    for mine, theirs in zip(jax.tree.leaves(state), jax.tree.leaves(replayed)):
        np.testing.assert_array_equal(mine, theirs)


def test_the_line_keeps_the_latest_notes_once_the_history_is_full():
    tables = GrammarTables.from_vocab(VOCAB)
    pitches = np.resize([60, 62, 64, 65, 67, 69], MOTIF_HISTORY + 5)
    tokens = []
    for pitch in pitches:
        tokens += [VOCAB.note_ids(PIANO, 2, pitch), VOCAB.wait_id(3), VOCAB.note_ids(PIANO, 0, pitch)]
    state = replay(jnp.asarray(tokens, jnp.int32)[None], tables)
    np.testing.assert_array_equal(state.melody(), pitches[-MOTIF_HISTORY:])


def test_the_bonus_goes_to_the_note_that_followed_last_time_at_a_steps_first_melodic_note_only():
    tables = GrammarTables.from_vocab(VOCAB, motif_bias=1.5)
    state = play(tables, TUNE)  # the last note is released: a new step with no note-on yet
    np.testing.assert_array_equal(state.melody(), TUNE)
    shown = bonus(state, tables)
    assert shown[VOCAB.id("piano:v2:F4")] == 1.5 and shown[VOCAB.id("strings:v1:F4")] == 1.5  # any family
    assert shown[VOCAB.id("piano:v4:F4")] == 1.5  # any velocity
    rewarded = set(tables.melody_pitch[np.flatnonzero(shown)].tolist())
    assert rewarded == {65} and np.all(tables.is_on[np.flatnonzero(shown)])
    assert shown[VOCAB.id("piano:v0:F4")] == 0.0 and shown[VOCAB.id("drums:v3:F4")] == 0.0  # offs, drums
    assert shown[VOCAB.id("piano:v2:F5")] == 0.0 and shown[VOCAB.id("piano:v2:G4")] == 0.0
    assert shown[VOCAB.wait_id(5)] == 0.0 and shown[VOCAB.end_id] == 0.0
    drummed = step(state, tables, "drums:v3:C2")  # a drum hit is no melody note: still the step's first
    assert bonus(drummed, tables)[VOCAB.id("piano:v2:F4")] == 1.5
    chord = step(state, tables, "piano:v2:C4")  # a lower voice first: F4 can still be the step's top note
    assert bonus(chord, tables)[VOCAB.id("piano:v2:F4")] == 1.5
    assert not bonus(step(state, tables, "piano:v2:A4"), tables).any()  # above F4: the melody is not F4
    moved_on = step(step(chord, tables, "piano:v2:F4"), tables, VOCAB.wait_id(10))
    assert moved_on.melody()[-1] == 65  # the step's top note, though C4 came first
    assert np.array_equal(state.melody_line, play(tables, TUNE).melody_line)


def test_no_bonus_without_an_earlier_occurrence_and_none_at_all_when_off():
    tables = GrammarTables.from_vocab(VOCAB, motif_bias=1.5)
    assert not bonus(GrammarState.initial(1, tables), tables).any()
    assert not bonus(play(tables, [60, 62, 64, 65, 67, 69, 60, 62]), tables).any()  # C D E never came back
    assert not bonus(play(tables, [62] * 5), tables).any()  # D D D overlaps the current D D D: no occurrence
    assert set(tables.melody_pitch[np.flatnonzero(bonus(play(tables, [62] * 6), tables))]) == {62}
    off = GrammarTables.from_vocab(VOCAB)
    assert off.motif_bias == 0.0 and not bonus(play(off, TUNE), off).any()  # logits + 0: exactly the same
    with pytest.raises(ValueError, match="sample.motif_bias must be finite and >= 0"):
        SampleConfig(motif_bias=-1.0)
    with pytest.raises(ValueError, match="sample.motif_bias"):
        SampleConfig(motif_bias=float("nan"))


def tune_request(repeats: int = 2) -> Request:
    """A piano prompt playing `TUNE`'s first five notes `repeats` times, then 3 seconds to continue."""
    body = []
    for pitch in TUNE[:5] * repeats:
        body += [VOCAB.note_ids(PIANO, 2, pitch), VOCAB.wait_id(20), VOCAB.note_ids(PIANO, 0, pitch)]
    prefix = TOKENIZER.prefix("bach", np.array([PIANO]))
    families = np.zeros(len(FAMILIES), bool)
    families[PIANO] = True
    target = 20 * 5 * repeats + 300
    return Request(np.concatenate([prefix, body]).astype(np.int32), len(prefix), target, target, families)


def suggestion_hits(ids: np.ndarray, start: int, tables: GrammarTables) -> np.ndarray:
    """How many of a sequence's melodic note-ons from `start` on came with a suggestion,
    and how many took it."""

    def body(state: GrammarState, token: jax.Array) -> tuple[GrammarState, jax.Array]:
        shown = motif_bonus(state, tables)[0]
        melodic = jnp.asarray(tables.melody_pitch)[token[0]] >= 0
        seen = jnp.stack([melodic & jnp.any(shown > 0), melodic & (shown[token[0]] > 0)])
        return advance(state, token, tables, jnp.array([True])), seen

    tokens = jnp.asarray(ids, jnp.int32)[:, None]
    _, seen = jax.lax.scan(body, GrammarState.initial(1, tables), tokens)
    return np.asarray(seen)[start:].sum(axis=0)


@pytest.mark.slow
def test_a_strong_motif_bias_makes_an_untrained_model_play_the_prompts_tune_on():
    """An untrained model's notes are noise; with the bonus its steps' top notes follow the tune."""
    cfg = load_config("tiny", ["model.d_model=32", "model.context=64"])
    model = MuseNet(cfg.model, VOCAB.size, rngs=nnx.Rngs(0))
    request = tune_request()
    rates = {}
    for strength in (0.0, 30.0):
        tables = GrammarTables.from_vocab(VOCAB, motif_bias=strength)
        sampler = Sampler(model, TOKENIZER, SampleConfig(), tables)
        counts = np.zeros(2)
        for cand in sampler.sample([request] * 4, max_new_tokens=160, seed=3):
            counts += suggestion_hits(
                cand.ids, len(request.prompt), GrammarTables.from_vocab(VOCAB, motif_bias=1.0)
            )
        rates[strength] = counts
    (suggested_off, took_off), (suggested_on, took_on) = rates[0.0], rates[30.0]
    assert suggested_on >= 4 and took_on >= 0.9 * suggested_on  # the tune goes on, note after note
    assert took_off <= suggested_off / 2  # without the bonus the model wanders off
