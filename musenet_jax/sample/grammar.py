"""Which token may come next, so that a sampled sequence is exactly what its MIDI file encodes back to.

The tokenizer writes one canonical token sequence per set of notes. Sampling under the same rules
(a mask on the logits) makes every candidate canonical: decode -> MIDI -> encode returns the same
tokens, and no note-off ever closes a note that is not sounding. The rules:
1. within one time step, note-offs come before note-ons, each group in ascending id order, no repeats;
2. a note-off only for a sounding note of that family and pitch, a note-on only for a silent one; a
   drum is silent again once its decoded hit (`midi_io.DRUM_HIT_S`) has ended;
3. the longest wait may be followed by any wait, a shorter wait only by an event or `end`
   (the tokenizer splits a long gap into longest waits and one remainder);
4. `end` only when no note sounds and the last token is not a wait (MIDI keeps no trailing silence);
5. note-ons only of the allowed instrument families; never pad, composer, instrument or start tokens.
With the training split's `NoteFacts` two more rules may hold a model to what the data does:
6. pitch range: a family's note-ons only within the pitches it plays in the data (widened by the
   transposition the model was trained with), or its usual range (`families.TYPICAL_PITCHES`) where the
   data never plays it;
7. note length: a note that has sounded as long as its family's notes rarely do (the 99th percentile)
   is released first thing at the next time step: while such note-offs are open, they are the only
   choice.
And one rule of how pieces open (nearly all of the data's do, with a note; a model trained on crops from
anywhere in a piece sees rests after `start` a third of the time):
8. opening note: a piece starting from nothing (time 0, no note yet) begins with a note, not a rest.
And one soft rule, a logit penalty rather than a mask (nearly every note of the data lies in one major or
minor scale: scale consistency 0.98-0.99 over a piece's opening):
9. key: once a few melodic notes have been played, a note-on whose pitch class lies outside the major
   scale (or its relative minor) that best fits the recent notes loses `key_bias` from its logit. "Recent"
   decays by `KEY_DECAY` per note, so a piece may modulate; drums are not counted.
And one rule of anticipation (`encoding/anticipation.py`), with a vocabulary that has it:
10. controls: control tokens and the `anticipate` flag are never drawn; they are the given notes, which
   the sampler writes itself where they are due (`Request.forced`). They change no state: a given note
   does not sound in the events' slots. Nor are the fill-in-the-middle markers drawn; a prompt's given
   part between them changes no state (`replay`).
And a second soft rule, a logit bonus (real tunes bring their motifs back; a sampler drawing one token at a
time rarely does), a cache / copy model over the piece's own melody line (Kuhn & De Mori 1990):
11. motif: the state keeps the melody line so far (`encoding/melody.py`: the highest melodic note-on at
   each time step; the last `MOTIF_HISTORY` of them). The most recent earlier occurrence of the line's
   last `MOTIF_CONTEXT` pitches (ending before they begin) names the pitch that followed it there, and
   every melodic note-on of that pitch (any family, any velocity) gains `motif_bias` while it can still
   be the step's top note (no higher melodic note-on in the step yet: a chord's lower voices come first
   when they have lower ids). No such occurrence, no bonus; drums are not counted.
And one rule of requests (what a user asks for happens; a model rarely shown a pairing, such as Bach
with strings or a bass under a piano, otherwise leaves the asked-for part silent or plays it once):
12. parts: a family the request owes (`Request.owed`: the families asked for) may rest at most
   `part_rest_s` in the new music (at most half of it): once it has sounded no note for that long (from
   where sampling begins, or since its last note sounded), and while the other rules allow one of its
   note-ons, only its note-ons may be drawn; a wait is cut to land on that time, and `end` waits for it.
   Which pitch, how long and what follows stay the model's.
And a third soft rule, of form (real pieces bring whole passages back where a model drawing one token at a
time rarely does; `sample/form.py`):
13. form: each candidate follows a plan of repeats drawn from its composer's training pieces; while a
   repeat is under way, the token the piece played `lag` steps earlier at this point gains `form_bias`.
And a rule of playing together (anticipation's given notes tell where the given part's notes start; a model
that has not learnt to find them in its window plays on its own clock):
14. together: where a part is added to given notes, a note-on where no given note starts (on the events'
   clock) loses `onset_bias`, and so does a wait that lands where none starts when another wait may land
   where one does. Nothing gains: at a given onset, whether to play, and which notes, stay the model's.
The state is a small pytree updated inside the jitted decoding loop.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from musenet_jax.data.note_facts import NoteFacts
from musenet_jax.encoding import midi_io
from musenet_jax.encoding.families import DRUMS, TYPICAL_PITCHES
from musenet_jax.encoding.scales import scale_masks
from musenet_jax.encoding.vocab import (
    KIND_ANTICIPATE,
    KIND_CONTROL_OFF,
    KIND_CONTROL_ON,
    KIND_FIM_MIDDLE,
    KIND_FIM_SUFFIX,
    KIND_NOTE_OFF,
    KIND_NOTE_ON,
    KIND_WAIT,
    Vocabulary,
)

SOUNDING = np.iinfo(np.int32).max  # busy_until of a melodic note that is on until its note-off
KEY_DECAY = 1.0 - 1.0 / 16  # rule 9: each new note weighs the earlier ones by this (a memory of ~16 notes)
KEY_SETTLED = 4.0  # rule 9 holds once the decayed note count reaches this (about the first 4 notes)
MOTIF_HISTORY = 512  # rule 11: melody notes remembered (a folk tune's whole line; minutes of most pieces)
MOTIF_CONTEXT = 3  # rule 11: line pitches that must recur, in order, before the next one is suggested
NO_PITCH = -1  # an empty place in the melody line / no melodic note-on at this step yet


@dataclasses.dataclass(frozen=True)
class GrammarTables:
    """Per-id facts the rules need, as numpy arrays indexed by token id."""

    slot: np.ndarray  # int32: family * num_pitches + pitch index of a note token, 0 otherwise
    family: np.ndarray  # int32: family of a note token, 0 otherwise
    is_on: np.ndarray  # bool
    is_off: np.ndarray  # bool
    is_wait: np.ndarray  # bool
    is_short_wait: np.ndarray  # bool: a wait shorter than the longest
    wait_steps: np.ndarray  # int32
    order_key: np.ndarray  # int32: note-offs before note-ons, then by id (rule 1)
    hold: np.ndarray  # int32: steps a note-on keeps its slot busy (SOUNDING for melodic notes)
    on_in_range: np.ndarray  # bool: a note-on rule 6 allows (all True without facts)
    length_limit: np.ndarray  # int32 [slots]: steps after which rule 7 releases a note (SOUNDING = never)
    opening_note: bool  # rule 8
    pitch_class: np.ndarray  # int32: pitch class of a melodic note-on (rule 9), -1 otherwise
    melody_pitch: np.ndarray  # int32: MIDI pitch of a melodic note-on (rule 11), NO_PITCH otherwise
    is_control: np.ndarray  # bool: a control token or the `anticipate` flag (rule 10)
    key_bias: float  # rule 9: logit penalty of an out-of-key note-on (0 = off)
    motif_bias: float  # rule 11: logit bonus of the note that continued the same notes last time (0 = off)
    form_bias: float  # rule 13: logit bonus of the token a planned repeat plays again (0 = off)
    onset_bias: float  # rule 14: logit penalty of a note-on or a wait off the given onsets (0 = off)
    num_slots: int
    num_families: int
    end_id: int
    pad_id: int
    wait_base: int  # id of wait:1
    max_wait: int
    fim_suffix_id: int = -1  # the fill-in-the-middle markers (-1: the vocabulary has none)
    fim_middle_id: int = -1

    @classmethod
    def from_vocab(
        cls,
        vocab: Vocabulary,
        facts: NoteFacts | None = None,
        *,
        pitch_range: bool = True,
        pitch_margin: int = 0,
        note_length: bool = True,
        opening_note: bool = False,
        key_bias: float = 0.0,
        motif_bias: float = 0.0,
        form_bias: float = 0.0,
        onset_bias: float = 0.0,
    ) -> GrammarTables:
        """Rules 1-5 always; with `facts`, rule 6 (`pitch_range`, widened by `pitch_margin` semitones)
        and rule 7 (`note_length`) where switched on; rule 8 where `opening_note`; rule 9 where
        `key_bias` > 0; rule 11 where `motif_bias` > 0; rule 13 where `form_bias` > 0; rule 14 where
        `onset_bias` > 0."""
        kinds = vocab.token_kinds
        ids = np.arange(vocab.size)
        is_note = vocab.note_family >= 0
        family = np.where(is_note, vocab.note_family, 0).astype(np.int32)
        pitch_index = np.where(is_note, vocab.note_pitch - vocab.cfg.pitch_min, 0)
        drum_hit = math.ceil(midi_io.DRUM_HIT_S * 1000 / vocab.cfg.time_step_ms)
        is_on = kinds == KIND_NOTE_ON
        melodic_on = is_on & (family != DRUMS)
        num_slots = len(vocab.families) * vocab.num_pitches
        on_in_range = np.ones(vocab.size, bool)
        length_limit = np.full(num_slots, SOUNDING, np.int32)
        if facts is not None and pitch_range:  # a family the data never played: its usual range
            seen = np.asarray(facts.notes) > 0
            typical = np.asarray([TYPICAL_PITCHES[name] for name in vocab.families])
            low = np.where(seen, np.asarray(facts.pitch_low) - pitch_margin, typical[:, 0])[family]
            high = np.where(seen, np.asarray(facts.pitch_high) + pitch_margin, typical[:, 1])[family]
            on_in_range = ~is_on | ((vocab.note_pitch >= low) & (vocab.note_pitch <= high))
        if facts is not None and note_length:
            limits = np.where(np.asarray(facts.length_steps) > 0, facts.length_steps, SOUNDING)
            length_limit = np.repeat(limits, vocab.num_pitches).astype(np.int32)
        return cls(
            slot=(family * vocab.num_pitches + pitch_index).astype(np.int32),
            family=family,
            is_on=is_on,
            is_off=kinds == KIND_NOTE_OFF,
            is_wait=kinds == KIND_WAIT,
            is_short_wait=(kinds == KIND_WAIT) & (vocab.wait_steps < vocab.cfg.max_wait_steps),
            wait_steps=vocab.wait_steps.astype(np.int32),
            order_key=(is_on * vocab.size + ids).astype(np.int32),
            hold=np.where(family == DRUMS, drum_hit, SOUNDING).astype(np.int32),
            on_in_range=on_in_range,
            length_limit=length_limit,
            opening_note=opening_note,
            pitch_class=np.where(melodic_on, vocab.note_pitch % 12, -1).astype(np.int32),
            melody_pitch=np.where(melodic_on, vocab.note_pitch, NO_PITCH).astype(np.int32),
            is_control=np.isin(
                kinds, (KIND_ANTICIPATE, KIND_CONTROL_ON, KIND_CONTROL_OFF, KIND_FIM_SUFFIX, KIND_FIM_MIDDLE)
            ),
            key_bias=float(key_bias),
            motif_bias=float(motif_bias),
            form_bias=float(form_bias),
            onset_bias=float(onset_bias),
            num_slots=num_slots,
            num_families=len(vocab.families),
            end_id=vocab.end_id,
            pad_id=vocab.pad_id,
            wait_base=vocab.wait_base,
            max_wait=vocab.cfg.max_wait_steps,
            fim_suffix_id=vocab.fim_suffix_id,
            fim_middle_id=vocab.fim_middle_id,
        )


@struct.dataclass
class GrammarState:
    """Per sequence: the time so far, when each (family, pitch) is free, and what the last token was."""

    time: jax.Array  # int32 [B]: time steps so far (sum of waits)
    busy_until: jax.Array  # int32 [B, slots]: step from which a slot may sound again; SOUNDING while on
    on_since: jax.Array  # int32 [B, slots]: step of the slot's latest note-on
    last_key: jax.Array  # int32 [B]: order key of the last event at this time step, -1 after a wait
    after_wait: jax.Array  # bool [B]
    after_short_wait: jax.Array  # bool [B]
    pitch_classes: jax.Array  # float32 [B, 12]: recent melodic note-ons per pitch class, decayed (rule 9)
    # Rule 11: the melody line of the time steps before this one, oldest first, NO_PITCH where empty (the
    # newest note is last), and the highest melodic note-on of this step so far, pushed when time moves on
    # (note-ons of a step come in id order, which is not pitch order across families and velocities).
    melody_line: jax.Array  # int32 [B, MOTIF_HISTORY]
    step_top: jax.Array  # int32 [B]: NO_PITCH while this step has no melodic note-on

    @classmethod
    def initial(cls, batch: int, tables: GrammarTables) -> GrammarState:
        zeros = jnp.zeros((batch,), jnp.int32)
        false = jnp.zeros((batch,), bool)
        slots = jnp.zeros((batch, tables.num_slots), jnp.int32)
        line = jnp.full((batch, MOTIF_HISTORY), NO_PITCH, jnp.int32)
        return cls(
            zeros,
            slots,
            slots,
            zeros - 1,
            false,
            false,
            jnp.zeros((batch, 12), jnp.float32),
            line,
            zeros + NO_PITCH,
        )

    def melody(self, row: int = 0) -> np.ndarray:
        """The melody line of sequence `row` so far (its last `MOTIF_HISTORY` steps' and this step's)."""
        line = np.asarray(self.melody_line[row])
        top = int(self.step_top[row])
        return np.concatenate([line[line != NO_PITCH], [top] if top != NO_PITCH else []]).astype(np.int64)


def allowed_tokens(
    state: GrammarState, tables: GrammarTables, families_ok: jax.Array, may_end: jax.Array | None = None
) -> jax.Array:
    """bool [B, V]: the tokens the rules allow next; `families_ok` bool [B, families]; `may_end` bool [B]
    (default all True): False keeps a sequence from drawing `end` (a continuation the user ends)."""
    busy = jnp.take(state.busy_until, jnp.asarray(tables.slot), axis=1)
    sounding = busy == SOUNDING
    family_ok = jnp.take(families_ok, jnp.asarray(tables.family), axis=1)
    note_on = jnp.asarray(tables.is_on & tables.on_in_range)[None] & (busy <= state.time[:, None]) & family_ok
    note_off = jnp.asarray(tables.is_off)[None] & sounding
    in_order = jnp.asarray(tables.order_key)[None] > state.last_key[:, None]
    wait = jnp.asarray(tables.is_wait)[None] & ~state.after_short_wait[:, None]
    if tables.opening_note:  # rule 8: nothing played yet, so no rest first
        silent_start = (state.time == 0) & (state.last_key < 0)  # a wait always moves time on
        wait = wait & ~silent_start[:, None]
    can_end = ~jnp.any(state.busy_until == SOUNDING, axis=1) & ~state.after_wait
    if may_end is not None:
        can_end = can_end & may_end
    end = (jnp.arange(len(tables.slot)) == tables.end_id)[None] & can_end[:, None]
    allowed = (((note_on | note_off) & in_order) | wait | end) & ~jnp.asarray(tables.is_control)[None]
    held = state.time[:, None] - state.on_since >= jnp.asarray(tables.length_limit)[None]
    overdue_slot = (state.busy_until == SOUNDING) & held  # [B, slots]
    overdue = jnp.take(overdue_slot, jnp.asarray(tables.slot), axis=1) & note_off & in_order
    return jnp.where(jnp.any(overdue, axis=1, keepdims=True), overdue, allowed)


def family_sounding(state: GrammarState, tables: GrammarTables) -> jax.Array:
    """bool [B, families]: whether a note of each family sounds now (a drum hit within its hold)."""
    busy = state.busy_until.reshape(state.busy_until.shape[0], tables.num_families, -1)
    return jnp.any(busy > state.time[:, None, None], axis=2)


def owed_parts(allowed: jax.Array, tables: GrammarTables, due: jax.Array) -> jax.Array:
    """bool [B, V] (rule 12): where a family is `due` [B, families], only the note-ons of due families that
    `allowed` holds, if it holds any; elsewhere `allowed` as it is."""
    entering = allowed & jnp.asarray(tables.is_on)[None] & jnp.take(due, jnp.asarray(tables.family), axis=1)
    return jnp.where(jnp.any(entering, axis=1, keepdims=True), entering, allowed)


def heard_at(
    heard: jax.Array, sounding_before: jax.Array, after: GrammarState, token: jax.Array, tables: GrammarTables
) -> jax.Array:
    """int32 [B, families] (rule 12): the last time each family sounded, after `token` [B] took the state
    whose `family_sounding` was `sounding_before` to `after` (a note held through a wait sounded until the
    wait's end)."""
    struck = jnp.asarray(tables.is_on | tables.is_off)[token]
    family = jnp.asarray(tables.family)[token]
    touched = struck[:, None] & (jnp.arange(heard.shape[1])[None] == family[:, None])
    sounded = sounding_before | family_sounding(after, tables) | touched
    return jnp.where(sounded, after.time[:, None], heard)


def key_penalty(state: GrammarState, tables: GrammarTables) -> jax.Array:
    """float32 [B, V] (rule 9): `-key_bias` on the note-ons outside the scale that best fits each
    sequence's recent notes, once it has played enough of them to have a key; 0 elsewhere."""
    scales = jnp.asarray(scale_masks())
    best = jnp.argmax(state.pitch_classes @ scales.T, axis=1)  # [B]: the tonic whose scale holds most
    in_key = scales[best]  # [B, 12]
    pitch_class = jnp.asarray(tables.pitch_class)
    outside = (pitch_class >= 0)[None] & (jnp.take(in_key, jnp.maximum(pitch_class, 0), axis=1) == 0)
    settled = jnp.sum(state.pitch_classes, axis=1) >= KEY_SETTLED
    return jnp.where(outside & settled[:, None], -tables.key_bias, 0.0).astype(jnp.float32)


def motif_bonus(state: GrammarState, tables: GrammarTables) -> jax.Array:
    """float32 [B, V] (rule 11): `motif_bias` on the melodic note-ons of the pitch that followed the most
    recent earlier occurrence of the line's last `MOTIF_CONTEXT` pitches, while no higher melodic note
    has been played in the step; 0 elsewhere."""
    line = state.melody_line
    history, context = line.shape[1], MOTIF_CONTEXT
    suffix = line[:, history - context :]
    starts = history - 2 * context + 1  # an occurrence starting here ends before the suffix begins
    match = suffix[:, :1] != NO_PITCH  # a full context (the line fills from the right)
    for k in range(context):  # the context's few places; each compares every start at once
        match = match & (line[:, k : k + starts] == suffix[:, k : k + 1])
    latest = jnp.max(jnp.where(match, jnp.arange(starts)[None], -1), axis=1)  # [B]
    follower = jnp.take_along_axis(line, jnp.maximum(latest + context, 0)[:, None], axis=1)[:, 0]
    suggested = jnp.where((latest >= 0) & (state.step_top < follower), follower, NO_PITCH)  # NO_PITCH < all
    melody_pitch = jnp.asarray(tables.melody_pitch)[None]
    hit = (melody_pitch == suggested[:, None]) & (suggested != NO_PITCH)[:, None]
    return jnp.where(hit, tables.motif_bias, 0.0).astype(jnp.float32)


def advance(state: GrammarState, token: jax.Array, tables: GrammarTables, active: jax.Array) -> GrammarState:
    """The state after `token` [B]; rows where `active` is False stay as they are."""
    is_on = jnp.asarray(tables.is_on)[token]
    is_off = jnp.asarray(tables.is_off)[token]
    is_wait = jnp.asarray(tables.is_wait)[token]
    slot = jnp.asarray(tables.slot)[token]
    hold = jnp.asarray(tables.hold)[token]
    time = state.time
    struck = jnp.where(hold == SOUNDING, SOUNDING, time + hold)
    rows = jnp.arange(token.shape[0])
    old = state.busy_until[rows, slot]
    new = jnp.where(active & is_on, struck, jnp.where(active & is_off, time, old))
    is_note = is_on | is_off
    keep = lambda new_value, old_value: jnp.where(active, new_value, old_value)  # noqa: E731
    since = jnp.where(active & is_on, time, state.on_since[rows, slot])
    pitch_class = jnp.asarray(tables.pitch_class)[token]
    counted = (active & (pitch_class >= 0))[:, None]
    struck_class = (jnp.arange(12)[None] == pitch_class[:, None]).astype(jnp.float32)
    pitch_classes = jnp.where(counted, state.pitch_classes * KEY_DECAY + struck_class, state.pitch_classes)
    melody_pitch = jnp.asarray(tables.melody_pitch)[token]
    step_top = jnp.where(
        active & (melody_pitch != NO_PITCH), jnp.maximum(state.step_top, melody_pitch), state.step_top
    )
    moves_on = active & is_wait
    pushed = jnp.concatenate([state.melody_line[:, 1:], step_top[:, None]], axis=1)
    push = (moves_on & (step_top != NO_PITCH))[:, None]
    return GrammarState(
        time=keep(time + jnp.asarray(tables.wait_steps)[token], time),
        busy_until=state.busy_until.at[rows, slot].set(new),
        on_since=state.on_since.at[rows, slot].set(since),
        last_key=keep(
            jnp.where(is_wait, -1, jnp.where(is_note, jnp.asarray(tables.order_key)[token], state.last_key)),
            state.last_key,
        ),
        after_wait=keep(is_wait, state.after_wait),
        after_short_wait=keep(jnp.asarray(tables.is_short_wait)[token], state.after_short_wait),
        pitch_classes=pitch_classes,
        melody_line=jnp.where(push, pushed, state.melody_line),
        step_top=jnp.where(moves_on, NO_PITCH, step_top),
    )


def replay(tokens: jax.Array, tables: GrammarTables) -> GrammarState:
    """The state after a whole prompt [B, T] (prefix tokens change nothing), with the same `advance`. A
    fill-in-the-middle prompt's given part (`fim:suffix` through `fim:middle`) changes nothing either, and
    the wait its stream ends with was split at the span's start, not shortened before an event: the span
    may begin with a rest."""
    batch = tokens.shape[0]
    opened = jnp.cumsum(tokens == tables.fim_suffix_id, axis=1)
    middle = tokens == tables.fim_middle_id
    given = (opened > jnp.cumsum(middle, axis=1)) | middle

    def body(state: GrammarState, column: tuple[jax.Array, jax.Array]) -> tuple[GrammarState, None]:
        token, is_given = column
        return advance(state, token, tables, ~is_given), None

    columns = (jnp.swapaxes(tokens, 0, 1), jnp.swapaxes(given, 0, 1))
    state, _ = jax.lax.scan(body, GrammarState.initial(batch, tables), columns)
    fills_middle = jnp.any(middle, axis=1)
    return state.replace(after_short_wait=state.after_short_wait & ~fills_middle)


def close_sequence(ids: np.ndarray, busy_until: np.ndarray, tables: GrammarTables) -> np.ndarray:
    """`ids` cut short (by the requested length or the token budget) and ended canonically.

    With nothing sounding, trailing waits are dropped (MIDI keeps no trailing silence); notes still
    sounding get their note-offs, after a `wait:1` when the last token was an event (a note lasts at
    least one step); then `end`. `busy_until` is the sequence's grammar state [slots].
    """
    ids = np.asarray(ids, np.int32)
    offs = np.sort(_off_ids(np.flatnonzero(busy_until == SOUNDING), tables))
    last_is_wait = len(ids) > 0 and bool(tables.is_wait[ids[-1]])
    if len(offs) == 0:
        waits = tables.is_wait[ids]
        keep = int(np.flatnonzero(~waits)[-1]) + 1 if (~waits).any() else 0
        return np.concatenate([ids[:keep], [tables.end_id]]).astype(np.int32)
    lead = [] if last_is_wait else [tables.wait_base]  # wait:1
    return np.concatenate([ids, lead, offs, [tables.end_id]]).astype(np.int32)


def _off_ids(slots: np.ndarray, tables: GrammarTables) -> np.ndarray:
    """Note-off id of each (family, pitch) slot."""
    off_ids = np.flatnonzero(tables.is_off)
    by_slot = dict(zip(tables.slot[off_ids].tolist(), off_ids.tolist()))
    return np.array([by_slot[int(s)] for s in slots], np.int32)
