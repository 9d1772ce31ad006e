"""The inner critic's training settings: real pieces vs the model's own samples."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class CriticConfig:
    """How many fakes to draw, how long and on what to train, and how much to hold out for the AUC."""

    fakes: int = 64  # samples `critic make-fakes` draws by default
    steps: int = 200
    batch: int = 8  # rows per step, half real, half generated
    learning_rate: float = 1.0e-3
    finetune_trunk: bool = False  # False: only the critic head learns; True: the whole trunk too
    heldout: float = 0.25  # fraction of real and of generated pieces kept out for the AUC

    def __post_init__(self) -> None:
        if self.fakes < 1:
            raise ValueError(f"critic.fakes must be at least 1, got {self.fakes}")
        if self.steps < 1:
            raise ValueError(f"critic.steps must be at least 1, got {self.steps}")
        if self.batch < 2 or self.batch % 2:
            raise ValueError(
                f"critic.batch must be an even number >= 2 (half real, half generated), got {self.batch}"
            )
        if not self.learning_rate > 0:
            raise ValueError(f"critic.learning_rate must be positive, got {self.learning_rate}")
        if not 0 < self.heldout < 1:
            raise ValueError(f"critic.heldout must be a fraction in (0, 1), got {self.heldout}")
