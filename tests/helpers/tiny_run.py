"""A real training run on the tiny config, small enough for the sampling, critic and eval tests."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from musenet_jax.config import load_config

TINY_RUN = [
    "model.d_model=32",
    "model.context=64",
    "train.global_batch=8",  # one row per fake device (tests run with 8)
    "train.warmup_steps=1",
    "train.checkpoint_every=3",
    "train.eval_every=1000",
    "train.log_every=1",
    "sample.max_new_tokens=96",
    "sample.seconds=2",
]


def train_tiny(
    data_dir: pathlib.Path, workdir: pathlib.Path, steps: int = 3, overrides: Sequence[str] = ()
) -> pathlib.Path:
    """Trains `steps` steps with the real loop (Orbax checkpoint at the end) and returns the work dir."""
    from musenet_jax.train.loop import train

    train(load_config("tiny", [*TINY_RUN, f"data.data_dir={data_dir}", *overrides]), workdir, steps=steps)
    return workdir
