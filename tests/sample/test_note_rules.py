"""Grammar rules 6 and 7: the training split's pitch ranges and note lengths hold a sampled piece to what
the data does; with the rules switched off (or no facts) the grammar is rules 1-5 alone. Rule 8: a piece
from nothing opens with a note. Rule 9: a logit penalty on note-ons out of the recent notes' key."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from midi_corpus import packaged_midi_files

from musenet_jax.data.note_facts import NoteFacts, load_note_facts, note_facts, save_note_facts
from musenet_jax.encoding.families import FAMILIES
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.sample.grammar import GrammarState, GrammarTables, advance, allowed_tokens, key_penalty

TOKENIZER = Tokenizer()
VOCAB = TOKENIZER.vocab
PIANO = FAMILIES.index("piano")


def piano_facts(low: int = 60, high: int = 72, length: int = 10) -> NoteFacts:
    """Only the piano seen in the data, C4..C5, notes rarely longer than `length` steps."""
    count = [0] * len(FAMILIES)
    count[PIANO] = 100
    low_t, high_t, length_t = ([-1] * len(FAMILIES) for _ in range(3))
    low_t[PIANO], high_t[PIANO], length_t[PIANO] = low, high, length
    length_t = [max(x, 0) for x in length_t]
    return NoteFacts(tuple(count), tuple(low_t), tuple(high_t), tuple(length_t), VOCAB.cfg.time_step_ms)


def allowed(state, tables) -> np.ndarray:
    return np.asarray(allowed_tokens(state, tables, jnp.ones((1, len(FAMILIES)), bool)))[0]


def step(state, tables, token: str | int):
    token_id = VOCAB.id(token) if isinstance(token, str) else token
    return advance(state, jnp.array([token_id]), tables, jnp.array([True]))


def test_pitch_range_rule_keeps_note_ons_within_the_datas_pitches_plus_the_margin():
    ruled = GrammarTables.from_vocab(VOCAB, piano_facts(), pitch_margin=2)
    free = GrammarTables.from_vocab(VOCAB, piano_facts(), pitch_range=False)
    start = GrammarState.initial(1, ruled)
    inside, edge, outside = VOCAB.id("piano:v2:C4"), VOCAB.id("piano:v2:D5"), VOCAB.id("piano:v2:E5")
    assert (
        allowed(start, ruled)[inside] and allowed(start, ruled)[edge] and not allowed(start, ruled)[outside]
    )
    # a family the data never played keeps to its usual range: a bass stays a bass
    assert allowed(start, ruled)[VOCAB.id("bass:v2:E1")] and allowed(start, ruled)[VOCAB.id("bass:v2:G4")]
    assert (
        not allowed(start, ruled)[VOCAB.id("bass:v2:C6")]
        and not allowed(start, ruled)[VOCAB.id("bass:v2:D1")]
    )
    assert allowed(GrammarState.initial(1, free), free)[outside]


def test_note_length_rule_releases_a_held_note_first_thing_at_the_next_step():
    ruled = GrammarTables.from_vocab(VOCAB, piano_facts(length=10))
    free = GrammarTables.from_vocab(VOCAB, piano_facts(length=10), note_length=False)
    state_r = step(GrammarState.initial(1, ruled), ruled, "piano:v2:C4")
    state_f = step(GrammarState.initial(1, free), free, "piano:v2:C4")
    state_r, state_f = step(state_r, ruled, VOCAB.wait_id(6)), step(state_f, free, VOCAB.wait_id(6))
    within = allowed(state_r, ruled)  # 6 steps: still within the data's lengths, nothing forced
    assert within[VOCAB.id("piano:v2:E4")] and within[VOCAB.id("piano:v0:C4")] and within[VOCAB.end_id] == 0
    state_r, state_f = step(state_r, ruled, "piano:v2:E4"), step(state_f, free, "piano:v2:E4")
    state_r, state_f = step(state_r, ruled, VOCAB.wait_id(4)), step(state_f, free, VOCAB.wait_id(4))
    forced = np.flatnonzero(allowed(state_r, ruled))
    assert forced.tolist() == [VOCAB.id("piano:v0:C4")]  # C4 has sounded 10 steps; E4 only 4
    assert allowed(state_f, free)[VOCAB.id("piano:v2:G4")] and allowed(state_f, free)[VOCAB.id("piano:v0:C4")]
    state_r = step(state_r, ruled, "piano:v0:C4")
    after = allowed(state_r, ruled)
    assert after[VOCAB.id("piano:v2:G4")] and not after[VOCAB.id("piano:v0:C4")]  # released: the step goes on


def test_opening_note_rule_allows_no_rest_before_the_first_note_only():
    ruled = GrammarTables.from_vocab(VOCAB, opening_note=True)
    plain = GrammarTables.from_vocab(VOCAB)
    start = GrammarState.initial(1, ruled)
    wait = VOCAB.wait_id(25)
    assert allowed(start, plain)[wait] and not allowed(start, ruled)[wait]
    assert allowed(start, ruled)[VOCAB.id("drums:v3:C2")]  # a drum hit opens a piece too
    after_hit = step(start, ruled, "drums:v3:C2")
    assert allowed(after_hit, ruled)[wait]  # then a rest may follow
    assert allowed(step(start, ruled, "piano:v3:C4"), ruled)[wait]


def penalty(state, tables) -> np.ndarray:
    return np.asarray(key_penalty(state, tables))[0]


def play(state, tables, notes: list[str]):
    """Each note struck and released after a short wait, as the tokenizer writes a melody."""
    for name in notes:
        state = step(step(state, tables, f"piano:v2:{name}"), tables, VOCAB.wait_id(10))
        state = step(state, tables, f"piano:v0:{name}")
    return state


def test_key_rule_penalises_out_of_key_note_ons_once_a_key_is_heard_and_follows_a_modulation():
    tables = GrammarTables.from_vocab(VOCAB, key_bias=2.0)
    start = GrammarState.initial(1, tables)
    f_sharp, f_natural = VOCAB.id("piano:v2:F#4"), VOCAB.id("piano:v2:F4")
    assert not penalty(start, tables).any()  # no key before any note
    assert not penalty(play(start, tables, ["C4", "E4"]), tables).any()  # two notes: not yet settled
    c_major = play(start, tables, ["C4", "D4", "E4", "F4", "G4", "A4"])
    shown = penalty(c_major, tables)
    assert shown[f_sharp] == -2.0 and shown[VOCAB.id("strings:v1:C#2")] == -2.0  # any melodic family
    assert shown[f_natural] == 0.0 and shown[VOCAB.id("piano:v2:B5")] == 0.0
    assert shown[VOCAB.id("drums:v3:C#2")] == 0.0 and shown[VOCAB.id("piano:v0:F#4")] == 0.0  # drums, offs
    assert shown[VOCAB.wait_id(5)] == 0.0 and shown[VOCAB.end_id] == 0.0
    in_g = ["G4", "A4", "B4", "D5", "F#5", "G4", "D5", "B4", "F#4", "G4", "A4", "D5"]
    g_major = play(c_major, tables, in_g)
    moved = penalty(g_major, tables)  # the recent notes now fit G major: F# is in key, F is not
    assert moved[f_sharp] == 0.0 and moved[f_natural] == -2.0
    drums_only = GrammarTables.from_vocab(VOCAB, key_bias=2.0)
    hits = GrammarState.initial(1, drums_only)
    for _ in range(8):
        hits = step(step(hits, drums_only, "drums:v3:C2"), drums_only, VOCAB.wait_id(10))
    assert not penalty(hits, drums_only).any()  # drums give no key
    off = GrammarTables.from_vocab(VOCAB)
    assert off.key_bias == 0.0 and allowed(play(GrammarState.initial(1, off), off, ["C4"] * 6), off)[f_sharp]


def test_note_facts_of_real_pieces_and_their_round_trip(tmp_path):
    pieces = [TOKENIZER.encode(path) for path in packaged_midi_files()[:6]]
    facts = note_facts(TOKENIZER, pieces)
    events = [TOKENIZER.ids_to_events(ids) for ids in pieces]
    families = np.concatenate([e.family for e in events])
    pitches = np.concatenate([e.pitch for e in events])
    assert sum(facts.notes) == len(families)
    for family in np.unique(families):
        mine = families == family
        assert (
            facts.pitch_low[family] == pitches[mine].min() and facts.pitch_high[family] == pitches[mine].max()
        )
    assert facts.length_steps[PIANO] > 0 or facts.notes[PIANO] == 0
    save_note_facts(tmp_path, facts)
    assert load_note_facts(tmp_path) == facts
    assert load_note_facts(tmp_path / "elsewhere") is None
