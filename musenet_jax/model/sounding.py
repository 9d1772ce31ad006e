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

The set (`encoding/slots.py`) is counted from the window's token ids plus the notes held at its head
(`head`, from the piece before the window; none at a piece's start): per slot, note-ons minus note-offs.
While sampling, the KV cache carries the counts from step to step.
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


def held_after(inputs: jax.Array, head: jax.Array | None, slots: NoteSlots) -> jax.Array:
    """int32 [B, T, slots]: how many notes of each slot sound after each token of `inputs` [B, T], given
    those held before the first one (`head` [B, slots]; None: nothing). Counts, as two parts may hold
    the same pitch (a unison: two note-ons, then two note-offs)."""
    slot = jnp.asarray(slots.slot, jnp.int32)[inputs]
    change = jnp.asarray(slots.change, jnp.int32)[inputs]
    steps = jax.nn.one_hot(slot, slots.count, dtype=jnp.int32) * change[..., None]  # [B, T, slots]
    held = jnp.cumsum(steps, axis=1)
    if head is not None:
        held = held + head.astype(jnp.int32)[:, None, :]
    return jnp.maximum(held, 0)


def held_step(token: jax.Array, held: jax.Array, slots: NoteSlots) -> jax.Array:
    """The counts after one more token per sequence: token [B], held [B, slots] -> [B, slots]."""
    slot = jnp.asarray(slots.slot, jnp.int32)[token]
    change = jnp.asarray(slots.change, jnp.int32)[token][:, None]
    return jnp.maximum(held + jax.nn.one_hot(slot, slots.count, dtype=jnp.int32) * change, 0)


def held_before_positions(tokens: jax.Array, end: jax.Array, slots: NoteSlots) -> jax.Array:
    """int32 [B, slots]: the counts after `tokens[:, :end]` ([B, H] ids, `end` a scalar): the head of a
    window the sampler slides to, from the history that left it."""
    batch, length = tokens.shape
    slot = jnp.asarray(slots.slot, jnp.int32)[tokens]
    change = jnp.asarray(slots.change, jnp.int32)[tokens]
    before = jnp.arange(length, dtype=jnp.int32)[None, :] < end
    rows = jnp.broadcast_to(jnp.arange(batch)[:, None], tokens.shape)
    held = jnp.zeros((batch, slots.count), jnp.int32).at[rows, slot].add(jnp.where(before, change, 0))
    return jnp.maximum(held, 0)


def mask_silent_note_offs(logits: jax.Array, held: jax.Array, slots: NoteSlots) -> jax.Array:
    """logits [..., V] with the note-off of every slot holding no note (`held` [..., slots]) pushed to zero
    probability."""
    has_off = [s for s, token in enumerate(slots.off_token) if token >= 0]
    off_ids = jnp.asarray([slots.off_token[s] for s in has_off], jnp.int32)
    silent = held[..., jnp.asarray(has_off, jnp.int32)] <= 0
    return logits.at[..., off_ids].add(jnp.where(silent, SILENT_NOTE_OFF, 0.0).astype(logits.dtype))


class SoundingNotes(nnx.Module):
    """Sum of a learned [slots, d_model] table over the slots sounding at each position."""

    def __init__(self, cfg: ModelConfig, num_slots: int, *, rngs: nnx.Rngs):
        self.dtype = jnp.dtype(cfg.dtype)
        init = logical_init(nnx.initializers.normal(stddev=0.02), (None, "embed"))
        self.table = nnx.Param(init(rngs.params(), (num_slots, cfg.d_model), jnp.dtype(cfg.param_dtype)))

    def __call__(self, held: jax.Array) -> jax.Array:
        """[..., slots] note counts -> [..., d_model] in the compute dtype (a slot counts once however
        many notes it holds)."""
        table = constrain(self.table[...], (None, None)).astype(self.dtype)
        return (held > 0).astype(self.dtype) @ table
