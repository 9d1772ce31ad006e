"""Small MuseNet configs and batches shared by the model tests."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from musenet_jax.config import load_config
from musenet_jax.encoding.slots import note_slots
from musenet_jax.encoding.vocab import Vocabulary
from musenet_jax.model.config import ModelConfig

VOCAB = 300
SOUNDING_SLOTS = note_slots(Vocabulary(load_config("tiny").encoding)).count


def tiny_model_config(**changes) -> ModelConfig:
    """The tiny config at context 64 in float32 (exact comparisons), with `changes`."""
    base = dataclasses.replace(load_config("tiny").model, context=64, dtype="float32")
    return dataclasses.replace(base, **changes)


def batch(batch_size: int = 2, length: int = 64, seed: int = 0) -> dict[str, jnp.ndarray]:
    """Random tokens with realistic times: waits of 0-30 steps, several tokens sharing a time, and no notes
    held into the window (`sounding_head`, which training batches always carry)."""
    rng = np.random.default_rng(seed)
    waits = rng.integers(0, 30, (batch_size, length)) * (rng.random((batch_size, length)) < 0.5)
    times = np.cumsum(waits, axis=1) - waits[:, :1]
    durations = times[:, -1] + rng.integers(1, 500, batch_size)
    return {
        "inputs": jnp.asarray(rng.integers(1, VOCAB, (batch_size, length)), jnp.int32),
        "times": jnp.asarray(times, jnp.int32),
        "durations": jnp.asarray(durations, jnp.int32),
        "sounding_head": jnp.zeros((batch_size, SOUNDING_SLOTS), jnp.int32),
    }
