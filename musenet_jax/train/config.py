"""Training-loop settings: batch, optimizer schedule, regularization, checkpoints, evaluation."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """AdamW with warmup + cosine decay, clipping, accumulation, mixup and the checkpoint cadence."""

    global_batch: int = 8
    grad_accum_steps: int = 1
    steps: int = 1000
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
