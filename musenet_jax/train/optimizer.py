"""AdamW with linear warmup, cosine decay and global-norm clipping: the GPT-2 / MuseNet recipe."""

from __future__ import annotations

from typing import Any

import jax
import optax

from musenet_jax.train.config import TrainConfig


def learning_rate_schedule(cfg: TrainConfig) -> optax.Schedule:
    """0 -> peak over `warmup_steps`, then cosine down to `min_lr_ratio * peak` at `steps`."""
    warmup = max(min(cfg.warmup_steps, cfg.steps - 1), 0)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(cfg.steps, warmup + 1),
        end_value=cfg.learning_rate * cfg.min_lr_ratio,
    )


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """Clip, then AdamW; weight decay applies to weight matrices and embeddings only."""
    return optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(
            learning_rate=learning_rate_schedule(cfg),
            b1=cfg.adam_b1,
            b2=cfg.adam_b2,
            weight_decay=cfg.weight_decay,
            mask=decay_mask,
        ),
    )


DECAYED = ("kernel", "embedding")


def decay_mask(params: Any) -> Any:
    """True for weight matrices and embeddings; biases and norm scales are not decayed, whatever their
    rank (stacked layers give every parameter a leading layer axis, so rank cannot tell them apart)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: str(getattr(path[-1], "key", "")) in DECAYED, params
    )
