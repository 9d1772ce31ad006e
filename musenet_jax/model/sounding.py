"""An input embedding of the notes sounding at each position: a step beyond MuseNet.

Which note-off comes next depends on which notes are sounding, a set the tokens only give implicitly (a
note-on many tokens back, not yet followed by its note-off). A small model does not learn to recover it
through sparse attention and keeps notes on forever (docs/quality.md). This module hands the set to the
model: at position t, the sum of one learned vector per (family, pitch) slot sounding after token t.

The set is computed from the token ids of the window: a slot sounds when its latest note-on comes after
its latest note-off (`cummax` of the event positions, exact whatever the order). Notes already sounding
before the window's first token are not in it, as the tokens do not hold them either. Drums have
note-ons only and never sound on. While sampling, the KV cache carries the set from step to step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from musenet_jax.encoding.families import DRUMS
from musenet_jax.encoding.vocab import KIND_NOTE_OFF, KIND_NOTE_ON, Vocabulary
from musenet_jax.model.config import ModelConfig
from musenet_jax.model.sharding import constrain, logical_init


def note_slot_tables(vocab: Vocabulary) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """(slot per token id, +1 note-on / -1 note-off / 0 other per token id, number of slots), as
    hashable tuples: the model keeps them as static structure, not as arrays to train or shard."""
    kinds = vocab.token_kinds
    melodic = (vocab.note_family >= 0) & (vocab.note_family != DRUMS)
    slot = np.where(
        melodic, vocab.note_family * vocab.num_pitches + vocab.note_pitch - vocab.cfg.pitch_min, 0
    )
    change = np.where(
        melodic & (kinds == KIND_NOTE_ON), 1, np.where(melodic & (kinds == KIND_NOTE_OFF), -1, 0)
    )
    return tuple(int(s) for s in slot), tuple(int(c) for c in change), len(vocab.families) * vocab.num_pitches


class SoundingNotes(nnx.Module):
    """Sum of a learned [slots, d_model] table over the slots sounding after each token."""

    def __init__(
        self, cfg: ModelConfig, tables: tuple[tuple[int, ...], tuple[int, ...], int], *, rngs: nnx.Rngs
    ):
        self.slot, self.change, self.num_slots = tables
        self.dtype = jnp.dtype(cfg.dtype)
        init = logical_init(nnx.initializers.normal(stddev=0.02), (None, "embed"))
        self.table = nnx.Param(init(rngs.params(), (self.num_slots, cfg.d_model), jnp.dtype(cfg.param_dtype)))

    def sounding(self, inputs: jax.Array) -> jax.Array:
        """bool [B, T, slots]: the slots sounding after each token of `inputs` [B, T]."""
        slot = jnp.asarray(self.slot, jnp.int32)[inputs]
        change = jnp.asarray(self.change, jnp.int32)[inputs]
        hit = jax.nn.one_hot(slot, self.num_slots, dtype=jnp.bool_)  # [B, T, slots]
        position = jnp.arange(inputs.shape[1], dtype=jnp.int32)[None, :, None]
        last_on = jax.lax.cummax(jnp.where(hit & (change == 1)[..., None], position, -1), axis=1)
        last_off = jax.lax.cummax(jnp.where(hit & (change == -1)[..., None], position, -1), axis=1)
        return last_on > last_off

    def embed(self, sounding: jax.Array) -> jax.Array:
        """[..., slots] bool -> [..., d_model] in the compute dtype."""
        table = constrain(self.table[...], (None, None)).astype(self.dtype)
        return sounding.astype(self.dtype) @ table

    def step(self, token: jax.Array, sounding: jax.Array) -> jax.Array:
        """The set after one more token per sequence: token [B], sounding [B, slots] -> [B, slots]."""
        slot = jnp.asarray(self.slot, jnp.int32)[token]
        change = jnp.asarray(self.change, jnp.int32)[token][:, None]
        hit = jax.nn.one_hot(slot, self.num_slots, dtype=jnp.bool_)
        return jnp.where(hit & (change == 1), True, jnp.where(hit & (change == -1), False, sounding))
