"""Training-loop settings: batch, optimizer schedule, regularization, checkpoints, evaluation."""

from __future__ import annotations

import dataclasses
from typing import ClassVar


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The optimizer (AdamW or Muon) with warmup + cosine decay, clipping, accumulation, mixup and the
    checkpoint cadence."""

    OPTIMIZERS: ClassVar[tuple[str, ...]] = ("adamw", "muon")

    global_batch: int = 8
    grad_accum_steps: int = 1
    steps: int = 1000
    optimizer: str = "adamw"  # adamw | muon (Muon for the hidden matrices, AdamW for the rest)
    learning_rate: float = 3e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    adam_b1: float = 0.9
    adam_b2: float = 0.95
    clip_norm: float = 1.0
    mixup_alpha: float = 0.0  # lambda ~ Beta(a, a) over token embeddings; 0 turns mixup off
    seed: int = 0
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    eval_every: int = 200
    eval_batches: int = 8
    log_every: int = 10
    max_consecutive_nonfinite: int = 10
    # Fine-tuning: a new run starts from the parameters of this source (a run's latest checkpoint, a bundle,
    # hf://..., `bundled`: `train/init_from.py`); its vocabulary may add composer labels.
    # Ignored once the run has checkpoints of its own.
    init_from: str | None = None

    def __post_init__(self) -> None:
        """Every value against its meaning, so a bad one is one line before any work starts."""
        for key in (
            "global_batch",
            "grad_accum_steps",
            "checkpoint_every",
            "keep_checkpoints",
            "eval_every",
            "log_every",
            "max_consecutive_nonfinite",
        ):
            if getattr(self, key) < 1:
                raise ValueError(f"train.{key} must be at least 1, got {getattr(self, key)}")
        for key in ("steps", "warmup_steps", "eval_batches", "weight_decay", "mixup_alpha"):
            if getattr(self, key) < 0:
                raise ValueError(f"train.{key} must not be negative, got {getattr(self, key)}")
        if not self.learning_rate > 0 or not self.clip_norm > 0:
            raise ValueError(
                f"train.learning_rate and train.clip_norm must be positive, got {self.learning_rate} "
                f"and {self.clip_norm}"
            )
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not (0 <= self.adam_b1 < 1 and 0 <= self.adam_b2 < 1):
            raise ValueError(
                f"train.adam_b1 and train.adam_b2 must be in [0, 1), got {self.adam_b1}, {self.adam_b2}"
            )
        if self.optimizer not in self.OPTIMIZERS:
            raise ValueError(
                f"train.optimizer must be one of {', '.join(self.OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.global_batch % self.grad_accum_steps:
            raise ValueError(
                f"train.global_batch={self.global_batch} must split into train.grad_accum_steps="
                f"{self.grad_accum_steps} equal microbatches"
            )
