"""Faults a user meets in train / generate / eval, each reproduced with real parts (real Orbax
checkpoints, the real CLI) and answered by one line and an exit status, never a traceback.

Full disks and read-only folders are real tmpfs mounts (tests run as root); where mounting is not
permitted those tests skip.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest
from cli_runs import one_error_line, run_cli, tmpfs
from tiny_run import TINY_RUN

from musenet_jax.cli.main import main

REPO = pathlib.Path(__file__).resolve().parents[2]
SETS = [arg for override in TINY_RUN for arg in ("--set", override)]


def _read_only(path: pathlib.Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


@pytest.fixture
def run_copy(six_step_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(six_step_run, copy)
    return copy


# --- 5. one train per work directory -------------------------------------------------------------


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
        [
            sys.executable,
            "-m",
            "musenet_jax.cli.main",
            "train",
            "--workdir",
            str(workdir),
            "--steps",
            "100000",
            "--data-dir",
            str(music21_data_dir),
            *SETS,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(workdir / "train.lock", first)
        rc, out, err = run_cli(
            capsys,
            ["train", "--workdir", str(workdir), "--steps", "0", "--data-dir", str(music21_data_dir), *SETS],
        )
        assert rc == 2
        line = one_error_line(err, "train")
        assert "in use by another train" in line and f"PID {first.pid}," in line and "since" in line
    finally:
        first.send_signal(signal.SIGKILL)  # dies holding the lock: a stale lock for the next train
        first.communicate()
    assert json.loads((workdir / "train.lock").read_text())["pid"] == first.pid

    rc, out, err = run_cli(
        capsys,
        ["train", "--workdir", str(workdir), "--steps", "0", "--data-dir", str(music21_data_dir), *SETS],
    )
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


# --- 6. damaged checkpoints ------------------------------------------------------------------------


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


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_load_run_falls_back_from_a_damaged_latest_step(run_copy, damage):
    from musenet_jax.app.run import load_run
    from musenet_jax.errors import UserError

    DAMAGES[damage](run_copy / "checkpoints" / "6")
    said: list[str] = []
    run = load_run(run_copy, say=said.append)
    assert run.step == 3
    assert len(said) == 1 and "checkpoint step 6" in said[0] and "damaged" in said[0] and "step 3" in said[0]
    with pytest.raises(UserError, match=r"step 6 .* is damaged .*steps that pass their checks: 3 "):
        load_run(run_copy, 6, say=said.append)  # a step asked for by number is not swapped silently
    assert len(said) == 1  # the error line alone says it


@pytest.mark.slow
def test_generate_and_eval_fall_back_in_one_line(run_copy, tmp_path, capsys):
    _truncate(run_copy / "checkpoints" / "6")
    out_dir = tmp_path / "out"
    rc, out, err = run_cli(
        capsys,
        [
            "generate",
            "--checkpoint",
            str(run_copy),
            "--composer",
            "bach",
            "--instruments",
            "piano",
            "--seconds",
            "1",
            "--num-samples",
            "1",
            "--out",
            str(out_dir),
        ],
    )
    assert rc == 0, err
    warnings = [line for line in (out + err).splitlines() if "damaged" in line]
    assert len(warnings) == 1 and "step 6" in warnings[0] and "falling back to step 3" in warnings[0]
    assert "Traceback" not in err and (out_dir / "ranking.json").exists()

    rc, out, err = run_cli(
        capsys, ["eval", "--checkpoint", str(run_copy), "--num-samples", "0", "--max-pieces", "1", "--json"]
    )
    assert rc == 0, err
    assert json.loads(out)["step"] == 3  # stdout stays the report; the warning went to stderr
    assert sum("damaged" in line for line in err.splitlines()) == 1 and "Traceback" not in err

    rc, out, err = run_cli(
        capsys,
        ["eval", "--checkpoint", str(run_copy), "--step", "6", "--num-samples", "0", "--max-pieces", "1"],
    )
    assert rc == 2
    line = one_error_line(err, "eval")
    assert "checkpoint step 6" in line and "is damaged" in line and "steps that pass their checks: 3" in line


@pytest.mark.slow
def test_train_resumes_from_the_newest_readable_step(run_copy, music21_data_dir, capsys):
    _truncate(run_copy / "checkpoints" / "6")
    rc, out, err = run_cli(
        capsys,
        ["train", "--workdir", str(run_copy), "--steps", "7", "--data-dir", str(music21_data_dir), *SETS],
    )
    assert rc == 0, err
    said = out + err
    assert sum("damaged" in line and "step 6" in line for line in said.splitlines()) == 1
    assert "resumed from step 3" in said and "Traceback" not in err
    assert (run_copy / "set_aside" / "damaged-6").is_dir()  # kept for a look, out of the way


@pytest.mark.slow
def test_train_step_flag_resumes_from_a_chosen_step(run_copy, music21_data_dir, capsys):
    rc, out, err = run_cli(
        capsys,
        [
            "train",
            "--workdir",
            str(run_copy),
            "--step",
            "3",
            "--steps",
            "4",
            "--data-dir",
            str(music21_data_dir),
            *SETS,
        ],
    )
    assert rc == 0, err
    assert "resumed from step 3" in out
    assert (run_copy / "set_aside" / "after-resume-6").is_dir()


# --- 6. full disk, 9. read-only work dir and output -----------------------------------------------


@pytest.mark.slow
def test_full_disk_during_a_save_is_one_line_and_keeps_earlier_checkpoints(
    six_step_run, music21_data_dir, tmp_path, capsys
):
    from musenet_jax.app.run import load_run

    # the run's size in pages
    size = sum(-(-p.stat().st_size // 4096) * 4096 for p in six_step_run.rglob("*") if p.is_file())
    with tmpfs(tmp_path / "small_disk", f"{size + 256 * 1024}") as disk:  # room for logs, not for a step
        workdir = disk / "run"
        shutil.copytree(six_step_run, workdir)
        rc, out, err = run_cli(
            capsys,
            ["train", "--workdir", str(workdir), "--steps", "30", "--data-dir", str(music21_data_dir), *SETS],
        )
        assert rc == 2
        line = one_error_line(err, "train")
        assert "No space left on device" in line and str(disk) in line
        said: list[str] = []
        assert load_run(workdir, say=said.append).step == 6 and not said  # earlier checkpoints intact


def test_read_only_workdir_is_one_line(tmp_path, music21_data_dir, capsys):
    with tmpfs(tmp_path / "ro", "1m") as disk:
        _read_only(disk)
        rc, out, err = run_cli(
            capsys,
            [
                "train",
                "--workdir",
                str(disk / "run"),
                "--steps",
                "1",
                "--data-dir",
                str(music21_data_dir),
                *SETS,
            ],
        )
    assert rc == 2
    line = one_error_line(err, "train")
    assert "Read-only file system" in line and str(disk / "run") in line


def test_unwritable_out_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import musenet_jax.cli.generate as generate_cli

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(generate_cli, "run_from_args", no_model)
    with tmpfs(tmp_path / "ro", "1m") as disk:
        _read_only(disk)
        rc, out, err = run_cli(
            capsys,
            [
                "generate",
                "--checkpoint",
                str(tmp_path / "nowhere"),
                "--composer",
                "bach",
                "--instruments",
                "piano",
                "--out",
                str(disk / "out"),
            ],
        )
    assert rc == 2
    assert "Read-only file system" in one_error_line(err, "generate")


def test_os_errors_keep_their_traceback_with_musenet_debug(tmp_path, monkeypatch):
    import musenet_jax.cli.generate as generate_cli

    monkeypatch.setenv("MUSENET_DEBUG", "1")
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder should go")
    monkeypatch.setattr(generate_cli, "run_from_args", lambda *a, **k: None)
    with pytest.raises(OSError):
        main(
            [
                "generate",
                "--checkpoint",
                "x",
                "--composer",
                "bach",
                "--instruments",
                "piano",
                "--out",
                str(blocker / "out"),
            ]
        )


# --- 10. stale samples, 4. pieces as long as asked --------------------------------------------------


@pytest.mark.slow
def test_regenerating_removes_the_earlier_runs_samples(six_step_run, tmp_path, capsys):
    out_dir = tmp_path / "out"
    common = [
        "generate",
        "--checkpoint",
        str(six_step_run),
        "--composer",
        "bach",
        "--instruments",
        "piano",
        "--seconds",
        "1",
        "--out",
        str(out_dir),
    ]
    assert run_cli(capsys, [*common, "--num-samples", "3"])[0] == 0
    earlier = {p.name for p in out_dir.iterdir() if p.name.startswith("sample_")}
    assert (out_dir / "sample_2.mid").exists()
    (out_dir / "notes.txt").write_text("mine")
    rc, out, err = run_cli(capsys, [*common, "--num-samples", "1"])
    assert rc == 0, err
    stale = {name for name in earlier if not name.startswith("sample_0.")}  # the others are replaced
    assert f"removed {len(stale)} files of an earlier generate from {out_dir}" in out + err
    ranking = json.loads((out_dir / "ranking.json").read_text())["candidates"]
    samples = {p.name for p in out_dir.iterdir() if p.name.startswith("sample_")}
    assert {e["midi"] for e in ranking} == {n for n in samples if n.endswith(".mid")} == {"sample_0.mid"}
    assert (out_dir / "notes.txt").exists()  # only generate's own files are removed


@pytest.mark.slow
def test_an_absurd_length_is_refused_with_the_limit(six_step_run, tmp_path, capsys):
    rc, out, err = run_cli(
        capsys,
        [
            "generate",
            "--checkpoint",
            str(six_step_run),
            "--composer",
            "bach",
            "--instruments",
            "piano",
            "--seconds",
            "100000",
            "--out",
            str(tmp_path),
        ],
    )
    assert rc == 2
    assert "sample.seconds must be positive and at most 3600" in one_error_line(err, "generate")


@pytest.mark.slow
def test_four_minutes_with_ten_instruments_end_at_240_s(six_step_run, tmp_path, capsys):
    """The token budget follows from --seconds (the run's saved cap is lifted with max_new_tokens=0)."""
    from musenet_jax.encoding.families import FAMILIES

    out_dir = tmp_path / "out"
    rc, out, err = run_cli(
        capsys,
        [
            "generate",
            "--checkpoint",
            str(six_step_run),
            "--composer",
            "bach",
            "--instruments",
            ",".join(FAMILIES),
            "--seconds",
            "240",
            "--num-samples",
            "2",
            "--set",
            "sample.max_new_tokens=0",
            "--out",
            str(out_dir),
        ],
    )
    assert rc == 0, err
    ranking = json.loads((out_dir / "ranking.json").read_text())["candidates"]
    short = [e for e in ranking if e["stopped_by"] == "budget"]
    for entry in short:  # a piece that stops short says so
        assert f"sample_{entry['sample']} is" in out + err
    assert not short, ranking
    assert all(e["seconds"] == pytest.approx(240.0, abs=0.02) for e in ranking)


@pytest.mark.slow
def test_a_short_budget_is_said_per_candidate(six_step_run, tmp_path, capsys):
    rc, out, err = run_cli(
        capsys,
        [
            "generate",
            "--checkpoint",
            str(six_step_run),
            "--composer",
            "bach",
            "--instruments",
            "piano",
            "--seconds",
            "60",
            "--num-samples",
            "2",
            "--max-new-tokens",
            "40",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert rc == 0, err
    warnings = [line for line in (out + err).splitlines() if "token budget of 40 ran out" in line]
    assert len(warnings) == 2 and "of the 60.0 s asked for" in warnings[0]
