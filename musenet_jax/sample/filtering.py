"""The co-composer's "creativity" knobs on next-token logits: temperature, top-k and top-p (nucleus).

Filters set excluded logits to -inf; they compose in the usual order (temperature, top-k, top-p) and
never exclude the most likely token, so a distribution with one finite logit stays samplable. The knobs
are the run's `SampleConfig` (checked there), or a copy with a request's own.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from musenet_jax.sample.config import SampleConfig


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
    """Keeps the k largest logits of each row (ties with the k-th are kept too)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits >= kth, logits, -jnp.inf)


def top_p_filter(logits: jax.Array, p: float) -> jax.Array:
    """Keeps the smallest set of most likely tokens whose probability reaches p (the nucleus)."""
    if p >= 1.0:
        return logits
    ordered = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(ordered, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # probability mass of the tokens ranked above
    kept = jnp.maximum(jnp.sum(before < p, axis=-1, keepdims=True), 1)
    threshold = jnp.take_along_axis(ordered, kept - 1, axis=-1)
    return jnp.where(logits >= threshold, logits, -jnp.inf)


def filtered_logits(logits: jax.Array, settings: SampleConfig) -> jax.Array:
    """Temperature-scaled, then top-k and top-p filtered logits (temperature 0 leaves the scale)."""
    if settings.temperature > 0:
        logits = logits / settings.temperature
    return top_p_filter(top_k_filter(logits, settings.top_k), settings.top_p)


def draw(key: jax.Array, logits: jax.Array, settings: SampleConfig) -> jax.Array:
    """One token id per row: argmax at temperature 0, else a categorical draw from the filtered logits."""
    filtered = filtered_logits(logits, settings)
    if settings.temperature == 0:
        return jnp.argmax(filtered, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)
