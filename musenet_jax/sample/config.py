"""Sampling defaults: the co-composer's "creativity" knobs and how many candidates to draw."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """Temperature, top-k / top-p truncation, candidate count and requested length."""

    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    num_samples: int = 4
    seconds: float = 30.0
    max_new_tokens: int = 2048
    seed: int = 0
