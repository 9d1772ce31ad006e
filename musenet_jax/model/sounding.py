"""What the model is told about the notes sounding at each position: two steps beyond MuseNet.

Which note-off comes next depends on which notes are sounding, a set the tokens only give implicitly (a
note-on many tokens back, not yet followed by its note-off). A small model does not learn to recover it
through sparse attention and keeps notes on forever (docs/quality.md). Two answers, each switchable:

- `model.sounding_embedding`: at position t, the sum of one learned vector per (family, pitch) slot
  sounding after token t is added to the input embedding (`SoundingNotes`).
- `model.note_off_mask`: the next token's distribution puts no mass on the note-off of a silent note
  (`mask_silent_note_offs`): the grammar the sampler enforces, made part of the model, so training,
  evaluation and sampling see one distribution and the model only has to choose among the notes that
  can be released.

The set (`encoding/slots.py`) is computed from the window's token ids plus the notes sounding at its
head (`head`, from the piece before the window; none at a piece's start): a slot sounds when its latest
note-on in the window comes after its latest note-off, or, with no event of it in the window yet, when it
sounded at the head. While sampling, the KV cache carries the set from step to step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from musenet_jax.encoding.slots import NoteSlots
from musenet_jax.model.config import ModelConfig
from musenet_jax.model.sharding import constrain, logical_init

# Logit offset of a silent note's note-off: zero probability in practice, yet a finite loss should a
# target ever be one (a bug in the head state would show as a loss spike, not as NaN).
SILENT_NOTE_OFF = -1e4


def sounding_after(inputs: jax.Array, head: jax.Array | None, slots: NoteSlots) -> jax.Array:
    """bool [B, T, slots]: the slots sounding after each token of `inputs` [B, T], given those sounding
    before the first one (`head` [B, slots]; None: nothing)."""
    slot = jnp.asarray(slots.slot, jnp.int32)[inputs]
    change = jnp.asarray(slots.change, jnp.int32)[inputs]
    hit = jax.nn.one_hot(slot, slots.count, dtype=jnp.bool_)  # [B, T, slots]
    position = jnp.arange(inputs.shape[1], dtype=jnp.int32)[None, :, None]
    last_on = jax.lax.cummax(jnp.where(hit & (change == 1)[..., None], position, -1), axis=1)
    last_off = jax.lax.cummax(jnp.where(hit & (change == -1)[..., None], position, -1), axis=1)
    sounding = last_on > last_off
    if head is None:
        return sounding
    untouched = (last_on < 0) & (last_off < 0)
    return sounding | (untouched & head[:, None, :])


def sounding_step(token: jax.Array, sounding: jax.Array, slots: NoteSlots) -> jax.Array:
    """The set after one more token per sequence: token [B], sounding [B, slots] -> [B, slots]."""
    slot = jnp.asarray(slots.slot, jnp.int32)[token]
    change = jnp.asarray(slots.change, jnp.int32)[token][:, None]
    hit = jax.nn.one_hot(slot, slots.count, dtype=jnp.bool_)
    return jnp.where(hit & (change == 1), True, jnp.where(hit & (change == -1), False, sounding))


def sounding_before_positions(tokens: jax.Array, end: jax.Array, slots: NoteSlots) -> jax.Array:
    """bool [B, slots]: the slots sounding after `tokens[:, :end]` ([B, H] ids, `end` a scalar): the head
    of a window the sampler slides to, from the history that left it."""
    batch, length = tokens.shape
    slot = jnp.asarray(slots.slot, jnp.int32)[tokens]
    change = jnp.asarray(slots.change, jnp.int32)[tokens]
    position = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), tokens.shape)
    before = position < end
    rows = jnp.broadcast_to(jnp.arange(batch)[:, None], tokens.shape)

    def last(kind: int) -> jax.Array:
        seen = jnp.where(before & (change == kind), position, -1)
        return jnp.full((batch, slots.count), -1, jnp.int32).at[rows, slot].max(seen)

    return last(1) > last(-1)


def mask_silent_note_offs(logits: jax.Array, sounding: jax.Array, slots: NoteSlots) -> jax.Array:
    """logits [..., V] with the note-off of every slot not in `sounding` [..., slots] pushed to zero
    probability."""
    has_off = [s for s, token in enumerate(slots.off_token) if token >= 0]
    off_ids = jnp.asarray([slots.off_token[s] for s in has_off], jnp.int32)
    silent = ~sounding[..., jnp.asarray(has_off, jnp.int32)]
    return logits.at[..., off_ids].add(jnp.where(silent, SILENT_NOTE_OFF, 0.0).astype(logits.dtype))


class SoundingNotes(nnx.Module):
    """Sum of a learned [slots, d_model] table over the slots sounding at each position."""

    def __init__(self, cfg: ModelConfig, num_slots: int, *, rngs: nnx.Rngs):
        self.dtype = jnp.dtype(cfg.dtype)
        init = logical_init(nnx.initializers.normal(stddev=0.02), (None, "embed"))
        self.table = nnx.Param(init(rngs.params(), (num_slots, cfg.d_model), jnp.dtype(cfg.param_dtype)))

    def __call__(self, sounding: jax.Array) -> jax.Array:
        """[..., slots] bool -> [..., d_model] in the compute dtype."""
        table = constrain(self.table[...], (None, None)).astype(self.dtype)
        return sounding.astype(self.dtype) @ table
