"""One `train` per work directory: `W/train.lock` names the process writing the run (`locks.py`)."""

from __future__ import annotations

import os
from collections.abc import Callable

from musenet_jax.locks import FolderLock

LOCK_NAME = "train.lock"


class WorkdirLock(FolderLock):
    """The lock of one work directory; `enabled=False` (processes other than 0) does nothing."""

    def __init__(
        self, workdir: str | os.PathLike, *, enabled: bool = True, say: Callable[[str], None] = print
    ) -> None:
        super().__init__(workdir, LOCK_NAME, "train", "work directory", enabled=enabled, say=say)
