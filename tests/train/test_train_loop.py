"""The training loop end to end on real shards: exact resume after SIGKILL, SIGTERM, non-finite batches.

Training runs as `python -m musenet_jax.cli.main train ...` subprocesses (they see the 8 fake CPU
devices of conftest's XLA_FLAGS), on conftest's music21 dataset (real shards of a few scores).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

from musenet_jax.app.run import load_run
from musenet_jax.config import load_config
from musenet_jax.errors import UserError
from musenet_jax.train import loop
from musenet_jax.train.checkpoint import RunCheckpoints
from musenet_jax.train.metrics import read_metrics

# The tiny config made smaller still: seconds per run on 2 cores.
TINY = [
    "model.d_model=32",
    "model.context=64",
    "train.global_batch=8",
    "train.steps=40",
    "train.warmup_steps=4",
    "train.log_every=1",
    "train.checkpoint_every=5",
    "train.eval_every=20",
    "train.eval_batches=1",
]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "musenet_jax.cli.main", *args]


def _train_command(data_dir, workdir, *extra: str) -> list[str]:
    sets = [arg for override in TINY for arg in ("--set", override)]
    return _cli(
        "train", "--config", "tiny", "--data-dir", str(data_dir), "--workdir", str(workdir), *sets, *extra
    )


@pytest.fixture(scope="module")
def data_dir(music21_data_dir):
    """The session's music21 dataset (built once per test process by the real TFDS builder)."""
    return music21_data_dir


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    """Polls a file-system condition written by a running training process."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"training exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _losses(workdir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(workdir / "metrics.jsonl") if "loss" in r}


def _params(workdir, step: int) -> list[np.ndarray]:
    model = load_run(workdir, step).model
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_restart_reproduces_the_uninterrupted_run(data_dir, tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    steps = ("--set", "train.steps=20")  # checkpoints at 5, 10, 15, 20: killed after the first
    subprocess.run(_train_command(data_dir, reference, *steps), check=True, capture_output=True, timeout=600)

    proc = subprocess.Popen(
        _train_command(data_dir, interrupted, *steps), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _wait_for(lambda: (interrupted / "checkpoints" / "5").is_dir(), proc, "the first checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    resumed_from = RunCheckpoints(interrupted, read_only=True).latest_step()
    assert resumed_from is not None and resumed_from < 20

    restart = subprocess.run(
        _train_command(data_dir, interrupted, *steps), capture_output=True, text=True, timeout=600
    )
    assert restart.returncode == 0, restart.stderr[-3000:]
    assert f"resumed from step {resumed_from}" in restart.stdout

    expected, got = _losses(reference), _losses(interrupted)
    assert sorted(got) == list(range(1, 21))
    assert got == expected  # bit-identical, the steps after the restart included (same data order)
    for a, b in zip(_params(reference, 20), _params(interrupted, 20), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_non_zero(data_dir, tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.Popen(
        _train_command(data_dir, workdir, "--set", "train.checkpoint_every=1000"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(lambda: len(_losses(workdir)) >= 2, proc, "two logged steps")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]  # unfinished: `train && export` stops
    assert "Traceback" not in err
    assert "SIGTERM" in out and "rerun the same command to resume" in out
    saved = RunCheckpoints(workdir, read_only=True).all_steps()
    assert len(saved) == 1 and 2 <= saved[0] < 40  # the step it stopped at, not a periodic one
    assert max(_losses(workdir)) == saved[0]


class _PoisonedBatches:
    """The real iterator, with loss_mask = NaN on the batches `bad(n)` picks (n counts from 1)."""

    def __init__(self, inner, bad) -> None:
        self.inner, self.bad, self.n = inner, bad, 0

    def __iter__(self):
        return self

    def __next__(self):
        batch = dict(next(self.inner))
        self.n += 1
        if self.bad(self.n):
            batch["loss_mask"] = np.full_like(batch["loss_mask"], np.nan)
        return batch

    def get_state(self):
        return {"inner": self.inner.get_state(), "n": self.n}

    def set_state(self, state) -> None:
        self.inner.set_state(state["inner"])
        self.n = state["n"]


@pytest.mark.slow
def test_a_nan_batch_is_skipped_and_a_run_of_them_stops_keeping_the_last_good_checkpoint(
    data_dir, tmp_path, monkeypatch
):
    real = loop.make_train_iterator  # the loop's data source, poisoned below (a faulty input, not a mock)
    cfg = load_config(
        "tiny", [*TINY, "train.steps=12", "train.checkpoint_every=4", "train.max_consecutive_nonfinite=3"]
    )

    monkeypatch.setattr(
        loop, "make_train_iterator", lambda *a, **k: _PoisonedBatches(real(*a, **k), lambda n: n == 3)
    )
    summary = loop.train(cfg.with_data_dir(data_dir), tmp_path / "one_bad")
    assert summary.final_step == 12 and summary.skipped_steps == 1
    records = {r["step"]: r for r in read_metrics(tmp_path / "one_bad" / "metrics.jsonl") if "loss" in r}
    assert (
        records[3]["loss"] == "nan" and records[2]["skipped_steps"] == 0 and records[3]["skipped_steps"] == 1
    )
    assert all(np.isfinite(records[s]["loss"]) for s in range(4, 13))
    for leaf in _params(tmp_path / "one_bad", 12):
        assert np.all(np.isfinite(leaf))

    monkeypatch.setattr(
        loop, "make_train_iterator", lambda *a, **k: _PoisonedBatches(real(*a, **k), lambda n: n >= 6)
    )
    with pytest.raises(UserError, match="3 consecutive non-finite losses.*last good checkpoint is step 4"):
        loop.train(cfg.with_data_dir(data_dir), tmp_path / "diverged")
    assert RunCheckpoints(tmp_path / "diverged", read_only=True).all_steps() == [4]
    assert np.all([np.all(np.isfinite(leaf)) for leaf in _params(tmp_path / "diverged", 4)])


@pytest.fixture(scope="module")
def two_step_run(data_dir, tmp_path_factory):
    """TINY (learned positions) trained 2 steps: the run the refused resumes below start from (copy it)."""
    workdir = tmp_path_factory.mktemp("two_steps") / "run"
    loop.train(
        load_config("tiny", [*TINY, "train.steps=2", "train.eval_every=1000"]).with_data_dir(data_dir),
        workdir,
    )
    return workdir


@pytest.mark.slow
def test_resuming_with_another_model_config_is_refused(data_dir, two_step_run, tmp_path):
    workdir = shutil.copytree(two_step_run, tmp_path / "run")
    assert (workdir / "config.json").is_file()
    changed = load_config("tiny", [*TINY, "train.steps=4", "model.n_layers=4"])
    with pytest.raises(UserError, match="different model.n_layers"):
        loop.train(changed.with_data_dir(data_dir), workdir)
    assert os.listdir(workdir / "checkpoints") == ["2"]


@pytest.mark.slow
def test_a_rotary_run_resumes_with_a_longer_context_and_a_learned_one_does_not(
    data_dir, two_step_run, tmp_path, capsys
):
    """A context curriculum: rotary positions have no table sized by the context, so a run may grow its
    window on resume (the line says so); a learned position table cannot change size."""
    base = [*TINY, "train.eval_every=1000", "model.position_encoding=rotary", "model.context=64"]
    loop.train(load_config("tiny", [*base, "train.steps=2"]).with_data_dir(data_dir), tmp_path / "rotary")
    longer = load_config("tiny", [*base, "train.steps=3", "model.context=128", "train.global_batch=16"])
    capsys.readouterr()
    loop.train(longer.with_data_dir(data_dir), tmp_path / "rotary")
    out = capsys.readouterr()
    assert "model.context 64 -> 128" in out.out + out.err
    assert sorted(_losses(tmp_path / "rotary")) == [1, 2, 3]
    learned = shutil.copytree(two_step_run, tmp_path / "learned")  # TINY's context is 64
    grown = load_config("tiny", [*TINY, "train.eval_every=1000", "train.steps=3", "model.context=128"])
    with pytest.raises(UserError, match="different model.context"):
        loop.train(grown.with_data_dir(data_dir), learned)


@pytest.mark.slow
def test_a_muon_run_resumes_exactly_and_refuses_another_optimizer(data_dir, tmp_path):
    def config(*extra: str):
        return load_config("tiny", [*TINY, "train.steps=4", "train.eval_every=1000", *extra]).with_data_dir(
            data_dir
        )

    loop.train(config("train.optimizer=muon"), tmp_path / "straight")
    loop.train(config("train.optimizer=muon"), tmp_path / "resumed", steps=2)
    loop.train(config("train.optimizer=muon"), tmp_path / "resumed")
    straight, resumed = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        assert resumed[step] == pytest.approx(straight[step], rel=1e-5), (step, resumed, straight)
    assert resumed[4] != pytest.approx(resumed[1], rel=1e-3)  # it trains

    with pytest.raises(UserError, match="different train.optimizer"):
        loop.train(config("train.steps=6"), tmp_path / "resumed")
