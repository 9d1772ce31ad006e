"""The optimizers a run may train with, both behind global-norm clipping and one schedule (linear warmup,
cosine decay): AdamW (the GPT-2 / MuseNet recipe) or optax's Muon (Nesterov momentum orthogonalized per
hidden matrix; optax's Nesterov Adam, without weight decay, for embeddings, the output head, biases and
norms)."""

from __future__ import annotations

from typing import Any

import jax
import optax
from optax.contrib import MuonDimensionNumbers, muon

from musenet_jax.train.config import TrainConfig

# Muon's updates are scaled to the RMS of a typical AdamW update (Liu et al. 2025, "Muon is scalable for
# LLM training"), so one learning rate and schedule serve both optimizers.
MUON_CONSISTENT_RMS = 0.2


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
    """Clip, then `cfg.optimizer`. AdamW decays weight matrices and embeddings (not biases or norm scales);
    Muon decays its hidden matrices only."""
    schedule = learning_rate_schedule(cfg)
    if cfg.optimizer == "muon":
        update = muon(
            learning_rate=schedule,
            weight_decay=cfg.weight_decay,
            adam_b1=cfg.adam_b1,
            adam_b2=cfg.adam_b2,
            muon_weight_dimension_numbers=muon_dimensions,
            consistent_rms=MUON_CONSISTENT_RMS,
        )
    else:
        update = optax.adamw(
            learning_rate=schedule,
            b1=cfg.adam_b1,
            b2=cfg.adam_b2,
            weight_decay=cfg.weight_decay,
            mask=decay_mask,
        )
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), update)


# The transformer's hidden matrices by module name, as (input axes, output axes) counted from the end, so a
# leading layer axis of stacked layers is a batch axis Muon orthogonalizes over.
MUON_MATRICES = {
    "query": MuonDimensionNumbers(reduction_axis=-3, output_axis=(-2, -1)),
    "key": MuonDimensionNumbers(reduction_axis=-3, output_axis=(-2, -1)),
    "value": MuonDimensionNumbers(reduction_axis=-3, output_axis=(-2, -1)),
    "out": MuonDimensionNumbers(reduction_axis=(-3, -2), output_axis=-1),
    "up": MuonDimensionNumbers(reduction_axis=-2, output_axis=-1),
    "down": MuonDimensionNumbers(reduction_axis=-2, output_axis=-1),
}


def muon_dimensions(params: Any) -> Any:
    """Muon's axes for each hidden kernel; None (AdamW) for embeddings, the output head, biases, norms."""

    def dimensions(path: Any, _: Any) -> MuonDimensionNumbers | None:
        names = [str(getattr(entry, "key", "")) for entry in path]
        if len(names) < 2 or names[-1] != "kernel" or "layers" not in names:
            return None
        return MUON_MATRICES.get(names[-2])

    return jax.tree_util.tree_map_with_path(dimensions, params)


DECAYED = ("kernel", "embedding")


def decay_mask(params: Any) -> Any:
    """True for weight matrices and embeddings; biases and norm scales are not decayed, whatever their
    rank (stacked layers give every parameter a leading layer axis, so rank cannot tell them apart)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: str(getattr(path[-1], "key", "")) in DECAYED, params
    )
