"""Pieces no model made, that a gate must fail: the controls of `eval --controls`.

Each keeps a real piece's rhythm, instruments and length and replaces its pitches, so the only thing it
lacks is what the gate should be measuring:
- shuffled_pitch: the piece's own pitches in a random order (its key, range and pitch variety unchanged);
- random_walk: a walk of -2..+2 degrees on the piece's major scale from its median pitch, kept inside
  its range (in key, stepwise, without themes);
- opening_then_random: the real piece for its first half, the random walk after (form that stops);
- opening_then_drone: the real piece for its first half, then every melodic note on the first half's most
  common pitch (the collapse a sampler can fall into: it repeats itself without a theme).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from musenet_jax.encoding.events import Events
from musenet_jax.encoding.families import DRUMS
from musenet_jax.encoding.scales import MAJOR_SCALE
from musenet_jax.eval.form_stats import piece_key

Control = Callable[[Events, np.random.Generator], Events]


def shuffled_pitch(events: Events, rng: np.random.Generator) -> Events:
    """The melodic notes' pitches permuted at random (drums untouched)."""
    melodic = np.flatnonzero(events.family != DRUMS)
    pitch = events.pitch.copy()
    pitch[melodic] = rng.permutation(pitch[melodic])
    return events.replace(pitch=pitch)


def random_walk(events: Events, rng: np.random.Generator, start_s: float = 0.0) -> Events:
    """The melodic notes from `start_s` on given pitches of a random walk on the piece's major scale."""
    melodic = np.flatnonzero((events.family != DRUMS) & (events.start_s >= start_s))
    key = piece_key(events)
    if not len(melodic) or key is None:
        return events
    everything = events.pitch[events.family != DRUMS].astype(np.int64)
    scale = np.array([p for p in range(128) if (p - key) % 12 in MAJOR_SCALE])
    scale = scale[(scale >= everything.min()) & (scale <= everything.max())]
    if not len(scale):
        return events
    degree = int(np.searchsorted(scale, np.median(everything)))
    pitch = events.pitch.copy()
    for note in melodic[np.argsort(events.start_s[melodic], kind="stable")]:
        degree = int(np.clip(degree + rng.integers(-2, 3), 0, len(scale) - 1))
        pitch[note] = scale[degree]
    return events.replace(pitch=pitch)


def opening_then_random(events: Events, rng: np.random.Generator) -> Events:
    """The real notes for the first half of the piece, a random walk on its scale after."""
    if not len(events):
        return events
    return random_walk(events, rng, start_s=float(events.end_s.max()) / 2)


def opening_then_drone(events: Events, rng: np.random.Generator) -> Events:
    """The real notes for the first half of the piece, its most common melodic pitch after (`rng` unused:
    every control takes one)."""
    melodic = events.family != DRUMS
    if not melodic.any():
        return events
    later = events.start_s >= float(events.end_s.max()) / 2
    first = events.pitch[melodic & ~later] if (melodic & ~later).any() else events.pitch[melodic]
    pitch = events.pitch.copy()
    pitch[melodic & later] = np.bincount(first.astype(np.int64)).argmax()
    return events.replace(pitch=pitch)


CONTROLS: dict[str, Control] = {
    "shuffled_pitch": shuffled_pitch,
    "random_walk": random_walk,
    "opening_then_random": opening_then_random,
    "opening_then_drone": opening_then_drone,
}
