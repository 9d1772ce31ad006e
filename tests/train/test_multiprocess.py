"""Two processes x 2 CPU devices (gloo, via launch/local_multiprocess.sh) train like one process x 4."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from musenet_jax.train.checkpoint import RunCheckpoints
from musenet_jax.train.metrics import read_metrics

REPO = pathlib.Path(__file__).resolve().parents[2]
STEPS = 3  # past the 2 warmup steps; the processes agree from the first step on
OVERRIDES = [
    "model.d_model=32",
    "model.context=64",
    "train.global_batch=8",
    f"train.steps={STEPS}",
    "train.warmup_steps=2",
    "train.log_every=1",
    f"train.checkpoint_every={STEPS}",
    f"train.eval_every={STEPS}",
    "train.eval_batches=1",
]


def _train_args(data_dir, workdir) -> list[str]:
    sets = [arg for override in OVERRIDES for arg in ("--set", override)]
    return ["--config", "tiny", "--data-dir", str(data_dir), "--workdir", str(workdir), *sets]


def _curve(workdir) -> tuple[list[float], float]:
    records = read_metrics(workdir / "metrics.jsonl")
    losses = [r["loss"] for r in records if "loss" in r]
    (bits,) = [r["val_bits_per_token"] for r in records if "val_bits_per_token" in r]
    return losses, bits


@pytest.mark.slow
def test_two_processes_train_together_like_one_process_with_all_devices(music21_data_dir, tmp_path):
    data_dir = music21_data_dir
    one_env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    one = subprocess.run(
        [sys.executable, "-m", "musenet_jax.cli.main", "train", *_train_args(data_dir, tmp_path / "one")],
        env=one_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]

    two_env = dict(os.environ, DEVICES_PER_PROCESS="2", PYTHON=sys.executable)
    two = subprocess.run(
        [
            "bash",
            str(REPO / "launch" / "local_multiprocess.sh"),
            "2",
            *_train_args(data_dir, tmp_path / "two"),
        ],
        env=two_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]

    losses_one, bits_one = _curve(tmp_path / "one")
    losses_two, bits_two = _curve(tmp_path / "two")
    assert len(losses_one) == len(losses_two) == STEPS
    np.testing.assert_allclose(losses_two, losses_one, rtol=2e-5)
    np.testing.assert_allclose(bits_two, bits_one, rtol=2e-5)
    # Both processes wrote their own data-iterator position into the shared checkpoint.
    assert RunCheckpoints(tmp_path / "two", read_only=True).all_steps() == [STEPS]
    data_files = sorted(
        p.name for p in (tmp_path / "two" / "checkpoints" / str(STEPS) / "data").glob("process_*")
    )
    assert data_files == ["process_0-of-2.json", "process_1-of-2.json"]
