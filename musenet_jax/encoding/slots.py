"""Note slots: one per (family, pitch) that can sound, with which token turns it on or off.

A slot sounds after a token while it holds more note-ons than note-offs (two parts may hold one pitch).
This is what the sampler's grammar tracks, what the sounding-notes embedding feeds the model, and what the
note-off mask uses to keep the model from releasing silent notes. A training crop or an evaluation window
starts mid-piece, so the notes held at its head come from the piece before it (`held_before`). Drums
have note-ons only and never sound on.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from musenet_jax.encoding.families import DRUMS
from musenet_jax.encoding.vocab import KIND_NOTE_OFF, KIND_NOTE_ON, Vocabulary


@dataclasses.dataclass(frozen=True)
class NoteSlots:
    """Per token id its slot and change (+1 note-on, -1 note-off, 0 other); per slot its note-off token
    (-1 for none). Hashable tuples: a model keeps them as static structure, not as arrays to train."""

    slot: tuple[int, ...]
    change: tuple[int, ...]
    off_token: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.off_token)


def note_slots(vocab: Vocabulary) -> NoteSlots:
    kinds = vocab.token_kinds
    melodic = (vocab.note_family >= 0) & (vocab.note_family != DRUMS)
    slot = np.where(
        melodic, vocab.note_family * vocab.num_pitches + vocab.note_pitch - vocab.cfg.pitch_min, 0
    )
    change = np.where(
        melodic & (kinds == KIND_NOTE_ON), 1, np.where(melodic & (kinds == KIND_NOTE_OFF), -1, 0)
    )
    off_token = np.full(len(vocab.families) * vocab.num_pitches, -1, np.int64)
    offs = np.flatnonzero(change == -1)
    off_token[slot[offs]] = offs
    return NoteSlots(tuple(map(int, slot)), tuple(map(int, change)), tuple(map(int, off_token)))


def held_before(ids: np.ndarray, end: int, slots: NoteSlots) -> np.ndarray:
    """int32 [slots]: how many notes of each slot sound after `ids[:end]`, i.e. at the head of a window
    starting at `end` (counts: two parts may hold the same pitch)."""
    head = np.asarray(ids[:end], np.int64)
    held = np.zeros(slots.count, np.int32)
    np.add.at(held, np.asarray(slots.slot, np.int64)[head], np.asarray(slots.change, np.int32)[head])
    return np.maximum(held, 0)
