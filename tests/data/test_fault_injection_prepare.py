"""Fault injection on reading and preparing data (issue 29): hostile MIDI within a memory budget, Ctrl-C
and bad worker counts, a run waiting on its coordinator. Real files, real subprocesses of the CLI."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import textwrap

import mido
import numpy as np
import pytest
from cli_runs import ctrl_c_as_at_a_terminal
from midi_corpus import hostile_gap_midi
from test_fault_injection_data import cli, folder_of, good_files, one_error_line, prepare_cli

from musenet_jax.bench.serve import free_port
from musenet_jax.data import builder as builder_lib
from musenet_jax.data.prepare import LOCK_NAME, prepare
from musenet_jax.encoding.budget import MAX_FILE_BYTES, MAX_NOTES, over_budget
from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.encoding.events import Events
from musenet_jax.encoding.midi_io import MidiReadError, events_to_midi
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.locks import FolderLock

MEMORY_BUDGET_MB = 1024  # what one hostile file may make a command use, at most


# Forks and execs the command, then writes its peak resident memory (KB, its waited-for children included)
# to argv[1]. A small process of its own: Linux keeps a process's peak across exec, so a command forked
# straight from the test process would count the test process's memory as its own.
PEAK_RSS_OF = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


def measured(args: list[str], tmp_path) -> tuple[subprocess.CompletedProcess, float]:
    """Runs a command to its end: its result and its peak resident memory in MB."""
    peak = tmp_path / "peak_rss_kb"
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_OF, str(peak), *args], capture_output=True, text=True
    )
    return result, int(peak.read_text()) / 1024


def musenet(*args: str) -> list[str]:
    return [sys.executable, "-m", "musenet_jax.cli.main", *args]


@pytest.fixture()
def hostile(tmp_path):
    """The 4.5e9-second gap of the report (its 3.5e9 wait tokens took 26 GiB)."""
    return hostile_gap_midi(tmp_path / "gap.mid")


# 10. One hostile file: refused with its reason before any array is sized, in every path that reads MIDI.


@pytest.mark.parametrize("parser", ["symusic", "miditoolkit"])
def test_hostile_gaps_and_lengths_are_refused_with_their_reason(parser, tmp_path):
    tokenizer = Tokenizer(parser=parser)
    for gap_s in (4.5e9, 3e7, 700.0):
        with pytest.raises(
            MidiReadError, match=r"s of silence before the note at .* over the limit of 600 s"
        ):
            tokenizer.read_notes(hostile_gap_midi(tmp_path / f"gap{gap_s:g}.mid", gap_s))
    held = events_to_midi(Events.from_columns([0.0], [5 * 3600.0], [0], [60], [80]))
    held.dump(str(tmp_path / "held.mid"))
    with pytest.raises(MidiReadError, match=r"lasts 1.8e\+04 s, over the limit of 14400 s") as caught:
        tokenizer.read_notes(tmp_path / "held.mid")
    assert caught.value.reason == "too_long"
    fine = tokenizer.read_notes(hostile_gap_midi(tmp_path / "short_rest.mid", 60.0))
    rest = fine.events.start_s[1] - fine.events.end_s[0]
    assert len(fine.events) == 2 and np.isclose(rest, 60.0, atol=17)  # to within one tick (16.8 s)


def test_a_huge_file_is_refused_before_it_is_read_and_a_million_notes_are_too_many(tmp_path):
    huge = tmp_path / "huge.mid"
    with huge.open("wb") as f:
        f.write(b"MThd")
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: no 64 MiB written
    with pytest.raises(MidiReadError, match=r"huge.mid: 64 MiB, over the limit of 64 MiB") as caught:
        Tokenizer().read_notes(huge)
    assert caught.value.reason == "too_large"
    n = MAX_NOTES + 1
    onsets = np.arange(n) * 0.01
    many = Events.from_columns(onsets, onsets + 0.01, np.zeros(n), np.full(n, 60), np.full(n, 80))
    assert over_budget(many)[0] == "too_many_notes"
    assert over_budget(many.select(np.arange(MAX_NOTES))) is None


def test_encode_skips_a_hostile_file_within_a_memory_budget(hostile, tmp_path):
    good = good_files(1)[0]
    result, peak_mb = measured(
        musenet("encode", str(hostile), str(good), "-o", str(tmp_path / "out")), tmp_path
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"musenet-jax encode: skipped {hostile}: 4.5e+09 s of silence")
    assert "over the limit of 600 s" in line
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == [
        f"{good.stem}.json"
    ]
    assert peak_mb < MEMORY_BUDGET_MB, peak_mb


@pytest.mark.parametrize("workers", ["1", pytest.param("2", marks=pytest.mark.slow)])
def test_prepare_builds_the_rest_of_a_folder_past_a_hostile_file(hostile, tmp_path, workers):
    midi_dir = folder_of(tmp_path, good_files(3))
    hostile.rename(midi_dir / "gap.mid")
    args = ["--source", "midi_dir", "--midi-dir", str(midi_dir), "--data-dir", str(tmp_path / "tfds")]
    result, peak_mb = measured(musenet("prepare", *args, "--workers", workers, "--json"), tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["files_ok"] == 3 and summary["skipped_by_reason"] == {"long_silence": 1}
    [entry] = builder_lib.read_skipped_report(tmp_path / "tfds", "midi_dir")
    assert entry["source"] == "gap.mid" and "4.5e+09 s of silence" in entry["detail"]
    assert peak_mb < MEMORY_BUDGET_MB, peak_mb


@pytest.mark.slow
def test_generate_refuses_a_hostile_prompt_within_a_memory_budget(hostile, tmp_path):
    args = ["--composer", "bach", "--instruments", "piano", "--seconds", "1", "--out", str(tmp_path / "out")]
    result, peak_mb = measured(musenet("generate", *args, "--prompt", str(hostile)), tmp_path)
    line = one_error_line(result)
    assert line.startswith(f"musenet-jax generate: error: {hostile}: 4.5e+09 s of silence")
    assert peak_mb < MEMORY_BUDGET_MB, peak_mb


@pytest.mark.slow
def test_critic_score_skips_a_hostile_file_within_a_memory_budget(hostile, tmp_path):
    good = good_files(1)[0]
    result, peak_mb = measured(musenet("critic", "score", str(hostile), str(good)), tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    skipped, scored = result.stdout.strip().splitlines()[-2:]
    assert skipped.startswith(f"skipped {hostile}") and "4.5e+09 s of silence" in skipped
    assert scored.endswith(f"  {good}") and 0 <= float(scored.split()[0]) <= 1
    assert peak_mb < MEMORY_BUDGET_MB, peak_mb


SERVE_UPLOAD = """
import sys
from musenet_jax.app.co_composer import CoComposer, Settings
from musenet_jax.app.run import load_run
from musenet_jax.errors import UserError

composer = CoComposer(load_run(None), sys.argv[2])
try:
    composer.start_piece(Settings("bach", ("piano",), 3.0, 1.0, 1.0), upload=sys.argv[1])
except UserError as err:
    print(err)
    sys.exit(3)
"""


@pytest.mark.slow
def test_the_co_composer_refuses_a_hostile_upload_within_a_memory_budget(hostile, tmp_path):
    (tmp_path / "media").mkdir()
    script = [sys.executable, "-c", textwrap.dedent(SERVE_UPLOAD), str(hostile), str(tmp_path / "media")]
    result, peak_mb = measured(script, tmp_path)
    assert result.returncode == 3, result.stderr
    # said with the upload's name, not the server's temporary path
    # (pyfluidsynth prints where it found its library when CI is set: that line is not ours)
    said = [line for line in result.stdout.splitlines() if "was found at" not in line]
    assert said[0].startswith("gap.mid: 4.5e+09 s of silence before the note"), result.stdout
    assert peak_mb < MEMORY_BUDGET_MB, peak_mb


# 11. Ctrl-C, bad worker counts and a missing coordinator.


def _read_until(stream, pattern: bytes) -> bytes:
    """What a child wrote until `pattern` appears (or it closed the stream)."""
    seen = b""
    while not re.search(pattern, seen):
        chunk = os.read(stream.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    return seen


@pytest.mark.slow
def test_ctrl_c_ends_prepare_without_converting_every_file(tmp_path):
    data_dir = tmp_path / "tfds"
    proc = _start_prepare(_many_files(tmp_path, 3000), data_dir)
    # meanwhile, a second prepare into the same data dir is refused, naming the first (8.)
    line = one_error_line(prepare_cli(folder_of(tmp_path, good_files(3)), data_dir))
    assert f"in use by another prepare (host {socket.gethostname()}, PID {proc.pid}, since" in line
    proc.send_signal(signal.SIGINT)
    _, after = proc.communicate(timeout=60)  # it used to wait for every scheduled file (121 s reported)
    assert proc.returncode == 130
    assert "musenet-jax prepare: interrupted" in after.decode()
    assert b"3000/3000" not in after  # it stopped before every file was converted
    assert list(data_dir.iterdir()) == []  # no dataset, no staging folder, no lock left


@pytest.mark.parametrize("workers", ["-3", "0"])
def test_a_worker_count_below_one_is_one_line(tmp_path, workers):
    midi_dir = folder_of(tmp_path, good_files(1))
    result = cli("prepare", "--source", "midi_dir", "--midi-dir", str(midi_dir), "--workers", workers)
    assert one_error_line(result) == (
        f"musenet-jax prepare: error: --workers must be 1 or more (conversion processes), got {workers}"
    )


def _train_as_process_1(coordinator: str, workdir, timeout_s: int | None = None) -> list[str]:
    args = ["train", "--workdir", str(workdir), "--coordinator", coordinator]
    args += ["--num-processes", "2", "--process-id", "1"]
    if timeout_s is None:
        return musenet(*args)
    shorter = f"import musenet_jax.train.distributed as d; d.JOIN_TIMEOUT_S = {timeout_s}; "
    run_cli = f"from musenet_jax.cli.main import main; import sys; sys.exit(main({args!r}))"
    return [sys.executable, "-c", shorter + run_cli]


@pytest.mark.slow
def test_a_process_waiting_for_its_coordinator_says_so_and_stops_on_ctrl_c(tmp_path):
    coordinator = f"127.0.0.1:{free_port()}"  # nobody listens there
    proc = subprocess.Popen(
        _train_as_process_1(coordinator, tmp_path / "w"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=ctrl_c_as_at_a_terminal,
    )
    waiting = proc.stderr.readline().decode().strip()
    assert waiting == (
        f"process 1 of 2: waiting up to 300 s for the coordinator (process 0) at {coordinator}"
    )
    proc.send_signal(signal.SIGINT)
    _, after = proc.communicate(timeout=60)  # it used to ignore SIGINT for 150 s
    assert proc.returncode == 130 and after.decode().strip() == "musenet-jax train: interrupted"


@pytest.mark.slow
def test_a_coordinator_that_never_answers_is_one_line(tmp_path):
    coordinator = f"127.0.0.1:{free_port()}"
    result = subprocess.run(
        _train_as_process_1(coordinator, tmp_path / "w", timeout_s=2), capture_output=True, text=True
    )
    waiting, line = result.stderr.strip().splitlines()
    assert result.returncode == 2 and waiting.endswith(
        f"waiting up to 2 s for the coordinator (process 0) at {coordinator}"
    )
    assert line.startswith(
        f"musenet-jax train: error: no answer from the coordinator (process 0) at {coordinator} within 2 s"
    )


# 5. Reuse decided by content and options; --force.


def _transpose_in_place(path, semitones: int) -> None:
    """Rewrites a MIDI file with every note moved: the same size, other music."""
    midi = mido.MidiFile(str(path))
    for track in midi.tracks:
        for n, message in enumerate(track):
            if message.type in ("note_on", "note_off"):
                track[n] = message.copy(note=message.note + semitones)
    midi.save(str(path))


def _reused(midi_dir, data_dir, **options) -> bool:
    summary = prepare("midi_dir", str(data_dir), midi_dir=str(midi_dir), show_progress=False, **options)
    return summary.reused


def test_a_file_changed_in_place_with_its_size_is_rebuilt(tmp_path):
    midi_dir, data_dir = folder_of(tmp_path, good_files(3)), tmp_path / "tfds"
    assert not _reused(midi_dir, data_dir, workers=1)
    assert _reused(midi_dir, data_dir, workers=1)
    changed = sorted(midi_dir.iterdir())[0]
    size = changed.stat().st_size
    _transpose_in_place(changed, 2)
    assert changed.stat().st_size == size
    assert not _reused(midi_dir, data_dir, workers=1)
    builder = builder_lib.make_builder("midi_dir", data_dir, EncodingConfig())
    stored = {
        ex["source"].decode(): ex["ids"]
        for split in builder.info.splits
        for ex in builder.as_data_source(split)
    }
    np.testing.assert_array_equal(stored[changed.name], Tokenizer().encode(changed))


@pytest.mark.slow
def test_options_that_change_the_result_and_force_rebuild(tmp_path):
    midi_dir, data_dir = folder_of(tmp_path, good_files(3)), tmp_path / "tfds"
    assert not _reused(midi_dir, data_dir, workers=1, file_timeout_s=60)
    assert _reused(midi_dir, data_dir, workers=1, file_timeout_s=60)
    # the README's advice after timeouts: rerun without the limit -- not the old build with its skips
    assert not _reused(midi_dir, data_dir, workers=1)
    assert _reused(midi_dir, data_dir, workers=1)
    assert not _reused(midi_dir, data_dir, workers=1, force=True)
    result = prepare_cli(midi_dir, data_dir, "--force", "--json")
    assert result.returncode == 0 and not json.loads(result.stdout)["reused"]


# 8. One prepare per data dir.


def test_a_second_prepare_into_a_data_dir_in_use_is_one_line(tmp_path):
    midi_dir, data_dir = folder_of(tmp_path, good_files(3)), tmp_path / "tfds"
    with FolderLock(data_dir, LOCK_NAME, "prepare", "data dir"):  # this process is the running prepare
        line = one_error_line(prepare_cli(midi_dir, data_dir))
        assert line.startswith(
            f"musenet-jax prepare: error: data dir {data_dir} is in use by another prepare"
        )
        assert f"PID {os.getpid()}, since" in line and f"delete {data_dir / LOCK_NAME}" in line
        assert sorted(p.name for p in data_dir.iterdir()) == [LOCK_NAME]  # nothing built
    assert prepare("midi_dir", str(data_dir), midi_dir=str(midi_dir), show_progress=False).files_ok == 3
    assert not (data_dir / LOCK_NAME).exists()  # released at the end


# 9b. What a killed prepare left is removed, and only that.


def _many_files(tmp_path, n: int = 300):
    files = good_files(9)
    midi_dir = tmp_path / "many"
    midi_dir.mkdir()
    for k in range(n):
        (midi_dir / f"f{k:03d}.mid").write_bytes(files[k % len(files)].read_bytes())
    return midi_dir


def _start_prepare(midi_dir, data_dir) -> subprocess.Popen:
    """A prepare of 300 files on 2 workers, returned once it has converted some."""
    args = [
        "--source",
        "midi_dir",
        "--midi-dir",
        str(midi_dir),
        "--data-dir",
        str(data_dir),
        "--workers",
        "2",
    ]
    proc = subprocess.Popen(
        musenet("prepare", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=ctrl_c_as_at_a_terminal,
    )
    assert b"/300" in _read_until(proc.stderr, rb"converting:.*\b[1-9]\d*/300")
    return proc


@pytest.mark.slow
def test_staging_a_killed_prepare_left_is_removed_and_nothing_else(tmp_path):
    data_dir = tmp_path / "tfds"
    killed = _start_prepare(_many_files(tmp_path), data_dir)
    killed.kill()  # SIGKILL: no handler runs, the staging folder and the lock stay
    killed.communicate(timeout=60)
    [left] = [p for p in data_dir.iterdir() if p.name != LOCK_NAME]
    assert left.name.startswith(".musenet_midi-midi_dir-building-")
    lookalike = data_dir / ".musenet_midi-midi_dir-building-userdata"  # not made by prepare
    lookalike.mkdir()
    (lookalike / "notes.txt").write_text("mine")
    result = prepare_cli(folder_of(tmp_path, good_files(3)), data_dir, "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["files_ok"] == 3
    assert f"taking over the stale lock {data_dir / LOCK_NAME}" in result.stderr
    assert (
        f"removed 1 unfinished build folder(s) a killed prepare left in {data_dir}: {left.name}"
        in result.stderr
    )
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(["musenet_midi", lookalike.name])
    assert (lookalike / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_sigterm_ends_prepare_and_removes_its_build(tmp_path):
    data_dir = tmp_path / "tfds"
    proc = _start_prepare(_many_files(tmp_path), data_dir)
    proc.terminate()
    _, after = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "musenet-jax prepare: interrupted" in after.decode()
    assert list(data_dir.iterdir()) == []


# 14. A full disk: one line naming the data dir, the previous dataset kept, nothing partial left.


def _file_size_limit(max_bytes: int):
    """In the child before exec: files may not grow past `max_bytes` (a write past it fails with EFBIG,
    as a full disk fails with ENOSPC); the signal that would kill the process instead is ignored."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return limit


def test_prepare_out_of_space_is_one_line_and_keeps_the_previous_dataset(tmp_path):
    midi_dir, data_dir = folder_of(tmp_path, good_files(3)), tmp_path / "tfds"
    prepare("midi_dir", str(data_dir), midi_dir=str(midi_dir), workers=1, show_progress=False)
    folder = builder_lib.dataset_dir(data_dir, "midi_dir")
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    shutil.copy(good_files(4)[-1], midi_dir / "new.mid")
    args = [
        "--source",
        "midi_dir",
        "--midi-dir",
        str(midi_dir),
        "--data-dir",
        str(data_dir),
        "--workers",
        "1",
    ]
    result = subprocess.run(
        musenet("prepare", *args), capture_output=True, text=True, preexec_fn=_file_size_limit(8192)
    )
    line = one_error_line(result)
    assert line.startswith(f"musenet-jax prepare: error: no space to write the dataset in {data_dir} (")
    assert "File too large" in line
    assert line.endswith(
        "the previous dataset is kept as it was; free some space there or give another --data-dir, then rerun"
    )
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in data_dir.iterdir()] == ["musenet_midi"]  # no partial build beside it
