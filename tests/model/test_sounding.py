"""What the model knows of the notes sounding: the set it computes equals the grammar's (also for a window
cut mid-piece, given the notes held into it), the full forward and the KV-cache decode give the same logits
with the embedding and the note-off mask, the mask leaves no mass on a silent note's note-off, and switched
off the embedding adds no parameter."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from midi_corpus import packaged_midi_files

from musenet_jax.config import load_config
from musenet_jax.encoding.slots import held_before, note_slots
from musenet_jax.encoding.timing import token_times
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.encoding.vocab import Vocabulary
from musenet_jax.model.sounding import held_after, held_before_positions
from musenet_jax.model.transformer import build_model
from musenet_jax.sample.grammar import SOUNDING, GrammarTables, replay

CFG = load_config(
    "tiny",
    ["model.context=64", "model.sounding_embedding=true", "model.note_off_mask=true", "model.dtype=float32"],
)
TOKENIZER = Tokenizer(CFG.encoding)


def real_window(length: int = 64) -> np.ndarray:
    ids = TOKENIZER.encode(packaged_midi_files()[2])
    return ids[:length].astype(np.int32)


SLOTS = note_slots(TOKENIZER.vocab)


def test_sounding_set_equals_the_grammars_at_every_position_also_mid_piece():
    ids = real_window(160)
    tables = GrammarTables.from_vocab(TOKENIZER.vocab)
    melodic = np.asarray(tables.hold)[np.asarray(tables.is_on)] == SOUNDING  # drums excluded
    assert melodic.any()
    held_into = []
    for start in (0, 57, 100):  # a window cut from the piece at `start`, with the notes held into it
        head = held_before(ids, start, SLOTS)
        held_into.append(head.any())
        np.testing.assert_array_equal(
            np.asarray(held_before_positions(jnp.asarray(ids[None]), start, SLOTS))[0], head
        )
        window = ids[start : start + 60]
        sounding = np.asarray(held_after(jnp.asarray(window[None]), jnp.asarray(head[None]), SLOTS))[0] > 0
        for t in (5, 20, 40, len(window) - 1):
            state = replay(jnp.asarray(ids[None, : start + t + 1]), tables)
            expected = np.asarray(state.busy_until)[0] == SOUNDING
            np.testing.assert_array_equal(sounding[t], expected)
    assert held_into[0] == False and any(held_into)  # noqa: E712 (a numpy bool)


def test_a_unison_holds_its_slot_until_both_notes_end():
    """Two parts on one pitch: two note-ons, then two note-offs; the slot sounds until the second."""
    vocab = TOKENIZER.vocab
    on, off = (vocab.note_ids(np.array([8]), np.array([b]), np.array([64]))[0] for b in (3, 0))
    ids = np.array([on, on, vocab.wait_id(50), off, off, vocab.wait_id(50)], np.int32)
    held = np.asarray(held_after(jnp.asarray(ids[None]), None, SLOTS))[0]
    slot = SLOTS.slot[on]
    assert held[:, slot].tolist() == [1, 2, 2, 1, 0, 0]
    assert held_before(ids, 4, SLOTS)[slot] == 1


def test_the_mask_leaves_no_mass_on_a_silent_notes_note_off():
    model = build_model(CFG.model, TOKENIZER.vocab)
    ids = real_window()
    times = jnp.asarray(token_times(ids, TOKENIZER.vocab)[None].astype(np.int32))
    logits = np.asarray(model(jnp.asarray(ids[None]), times, jnp.asarray([int(times[0, -1]) + 10])))[0]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    sounding = np.asarray(held_after(jnp.asarray(ids[None]), None, SLOTS))[0] > 0
    off_token = np.asarray(SLOTS.off_token)
    has_off = off_token >= 0
    for t in range(len(ids)):
        silent = has_off & ~sounding[t]
        assert probs[t, off_token[silent]].sum() < 1e-6
        held = has_off & sounding[t]
        assert not held.any() or probs[t, off_token[held]].min() > 0


def test_full_forward_equals_prefill_then_decode_with_the_sounding_embedding():
    model = build_model(CFG.model, TOKENIZER.vocab)
    ids = real_window()
    times = jnp.asarray(token_times(ids, TOKENIZER.vocab)[None].astype(np.int32))
    inputs, durations = jnp.asarray(ids[None]), jnp.asarray([int(times[0, -1]) + 10], jnp.int32)
    full = np.asarray(nnx.jit(lambda m, i, t, d: m(i, t, d))(model, inputs, times, durations))[0]
    head = 40
    prefill = nnx.jit(lambda m, i, t, d, c: m.prefill(i, t, d, c))
    logits, cache = prefill(model, inputs[:, :head], times[:, :head], durations, model.init_cache(1, 64))
    np.testing.assert_allclose(np.asarray(logits)[0], full[:head], atol=2e-4, rtol=1e-4)
    step = nnx.jit(lambda m, tok, t, d, c: m.decode_step(tok, t, d, c))
    for t in range(head, len(ids)):
        step_logits, cache = step(model, inputs[:, t], times[:, t], durations, cache)
        np.testing.assert_allclose(np.asarray(step_logits)[0], full[t], atol=2e-4, rtol=1e-4)
    assert np.asarray(cache.held).any()


def parameter_count(cfg) -> int:
    model = build_model(cfg.model, Vocabulary(cfg.encoding))
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_switched_off_it_adds_no_parameter_and_on_it_adds_one_table():
    off = CFG.replace(model=dataclasses.replace(CFG.model, sounding_embedding=False))
    vocab = Vocabulary(CFG.encoding)
    slots = len(vocab.families) * vocab.num_pitches
    assert parameter_count(CFG) - parameter_count(off) == slots * CFG.model.d_model
    assert build_model(off.model, vocab).sounding is None
