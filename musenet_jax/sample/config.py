"""Sampling defaults: the co-composer's "creativity" knobs and how many candidates to draw; and the
inner critic's training settings (it exists to rank those candidates)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """Temperature, top-k / top-p truncation, candidate count and requested length; critic training."""

    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    num_samples: int = 4
    seconds: float = 30.0
    max_new_tokens: int = 2048
    seed: int = 0
    restrict_instruments: bool = True  # note-ons only of the requested (and intro's) instrument families
    # The inner critic (musenet-jax critic ...): real vs the model's own samples.
    critic_fakes: int = 64  # samples `critic make-fakes` draws by default
    critic_steps: int = 200
    critic_batch: int = 8  # rows per step, half real, half generated
    critic_learning_rate: float = 1.0e-3
    critic_finetune_trunk: bool = False  # False: only the critic head learns; True: the whole trunk too
    critic_heldout: float = 0.25  # fraction of real and of generated pieces kept out for the AUC
