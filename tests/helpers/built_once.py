"""Session fixtures built once per test run, not once per pytest-xdist worker (each worker is a process
with its own session): the first worker to ask builds, the other waits for it and then shares the result."""

from __future__ import annotations

import fcntl
import os
import pathlib
import shutil
from collections.abc import Callable

import pytest


def built_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[pathlib.Path], object]
) -> pathlib.Path:
    """`build(path)` creates `path` (`name` in a folder of its own) once per run; every caller gets `path`,
    read only. Under xdist it lies in the temp folder the workers of this run share; a build that failed is
    redone."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "built_once"
    root.mkdir(exist_ok=True)
    path, done = root / name / name, root / f"{name}.built"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(path.parent, ignore_errors=True)  # what a failed build left
            path.parent.mkdir()
            build(path)
            done.touch()
    return path
