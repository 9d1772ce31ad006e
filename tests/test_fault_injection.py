"""Faults a user meets in train / generate / eval, each reproduced with real parts (real Orbax
checkpoints, the real CLI) and answered by one line and an exit status, never a traceback.

Full disks and read-only folders are real tmpfs mounts (tests run as root); where mounting is not
permitted those tests skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest
from tiny_run import TINY_RUN, train_tiny

from musenet_jax.cli.main import main

REPO = pathlib.Path(__file__).resolve().parents[1]
SETS = [arg for override in TINY_RUN for arg in ("--set", override)]


def _run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith(f"musenet-jax {command}: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


@contextlib.contextmanager
def _tmpfs(path: pathlib.Path, size: str):
    """A real, small file system at `path`; skips the test where mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _read_only(path: pathlib.Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


@pytest.fixture(scope="module")
def tiny_run(music21_data_dir, tmp_path_factory):
    """Checkpoints at steps 3 and 6, with their manifests."""
    return train_tiny(music21_data_dir, tmp_path_factory.mktemp("fault") / "run", steps=6)


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


def _wait_for(path: pathlib.Path, process: subprocess.Popen, limit_s: float = 300) -> None:
    """Bounded poll for a file another process writes (no sleeping as synchronization)."""
    deadline = time.monotonic() + limit_s
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear within {limit_s} s"
        time.sleep(0.1)


@pytest.mark.slow
def test_second_train_is_refused_and_a_dead_holders_lock_is_taken_over(music21_data_dir, tmp_path, capsys):
    workdir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    first = subprocess.Popen(
        [sys.executable, "-m", "musenet_jax.cli.main", "train", "--workdir", str(workdir),
         "--steps", "100000", "--data-dir", str(music21_data_dir), *SETS],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for(workdir / "train.lock", first)
        rc, out, err = _run_cli(capsys, ["train", "--workdir", str(workdir), "--steps", "0",
                                         "--data-dir", str(music21_data_dir), *SETS])
        assert rc == 2
        line = _one_error_line(err, "train")
        assert "in use by another train" in line and f"PID {first.pid}," in line and "since" in line
    finally:
        first.send_signal(signal.SIGKILL)  # dies holding the lock: a stale lock for the next train
        first.communicate()
    assert json.loads((workdir / "train.lock").read_text())["pid"] == first.pid

    rc, out, err = _run_cli(capsys, ["train", "--workdir", str(workdir), "--steps", "0",
                                     "--data-dir", str(music21_data_dir), *SETS])
    assert rc == 0, err
    assert (out + err).count("taking over the stale lock") == 1
    assert f"PID {first.pid}" in out + err and "Traceback" not in err
    assert not (workdir / "train.lock").exists()  # released at the end


def test_lock_is_only_taken_by_process_zero(tmp_path):
    from musenet_jax.train.lock import WorkdirLock

    with WorkdirLock(tmp_path, enabled=False):
        assert not (tmp_path / "train.lock").exists()
        with WorkdirLock(tmp_path):  # process 0 of the same job is not refused by the others
            assert (tmp_path / "train.lock").exists()
    assert not (tmp_path / "train.lock").exists()


def _truncate(step_dir: pathlib.Path) -> None:
    for path in (step_dir / "params" / "d").iterdir():
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_bit(step_dir: pathlib.Path) -> None:
    path = max((step_dir / "params" / "d").iterdir(), key=lambda p: p.stat().st_size)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


DAMAGES = {
    "truncated": _truncate,
    "bit_flip": _flip_a_bit,
    "no_metadata": lambda d: (d / "params" / "_METADATA").unlink(),
    "no_params": lambda d: shutil.rmtree(d / "params"),
}


def test_unwritable_out_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import musenet_jax.cli.generate as generate_cli

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(generate_cli, "run_from_args", no_model)
    with _tmpfs(tmp_path / "ro", "1m") as disk:
        _read_only(disk)
        rc, out, err = _run_cli(capsys, ["generate", "--checkpoint", str(tmp_path / "nowhere"), "--composer",
                                         "bach", "--instruments", "piano", "--out", str(disk / "out")])
    assert rc == 2
    assert "Read-only file system" in _one_error_line(err, "generate")


def test_os_errors_keep_their_traceback_with_musenet_debug(tmp_path, monkeypatch):
    import musenet_jax.cli.generate as generate_cli

    monkeypatch.setenv("MUSENET_DEBUG", "1")
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder should go")
    monkeypatch.setattr(generate_cli, "run_from_args", lambda *a, **k: None)
    with pytest.raises(OSError):
        main(["generate", "--checkpoint", "x", "--composer", "bach", "--instruments", "piano",
              "--out", str(blocker / "out")])
