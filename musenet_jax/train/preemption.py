"""Stopping early without losing work: SIGTERM/SIGINT -> checkpoint and exit; runaway NaNs -> stop.

Preemptible TPU VMs get a SIGTERM shortly before they go away. The handler only raises a flag; the
loop looks at it between steps, where the state is consistent, saves a checkpoint and returns. On a
multi-host run every process must save at the same step (an Orbax save is collective), so the flag
is agreed on across processes before anyone acts on it.
"""

from __future__ import annotations

import signal
import types
from collections.abc import Iterator
from contextlib import contextmanager

import jax
import numpy as np
from jax.experimental import multihost_utils

from musenet_jax.errors import UserError

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Raised flag of a SIGTERM or SIGINT received since `install()`."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        del frame
        self.signal_name = signal.Signals(signum).name

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Catches the stop signals for the duration of the block, then restores the old handlers."""
        previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def agreed(self) -> bool:
        """True when any process was asked to stop; every process gets the same answer."""
        local = self.signal_name is not None
        if jax.process_count() == 1:
            return local
        flags = multihost_utils.process_allgather(np.asarray(local, dtype=np.int32))
        return bool(np.any(flags))


class NonFiniteGuard:
    """Counts consecutive skipped (non-finite) updates and stops the run when there are too many.

    A skipped update leaves the parameters untouched, so a few are harmless (one bad batch); a long
    run of them means the model diverged and going on only burns compute.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.consecutive = 0
        self.total = 0

    def update(self, skipped: int, step: int, last_checkpoint: int | None, checkpoint_dir: str) -> None:
        """Feeds the number of skipped updates of one step; raises `UserError` past the limit."""
        if skipped:
            self.consecutive += 1
            self.total += int(skipped)
        else:
            self.consecutive = 0
        if self.limit and self.consecutive >= self.limit:
            kept = (
                f"the last good checkpoint is step {last_checkpoint} in {checkpoint_dir}"
                if last_checkpoint is not None
                else "no checkpoint was saved yet"
            )
            raise UserError(
                f"training stopped at step {step}: {self.consecutive} consecutive non-finite losses "
                f"(train.max_consecutive_nonfinite={self.limit}); {kept}; try a lower train.learning_rate"
            )
