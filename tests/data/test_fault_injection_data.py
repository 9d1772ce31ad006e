"""Fault injection on the data side (issue 16): each test reproduces one reported failure with real files and
the real TFDS builder, and shows what a user sees now: one line and the right exit status, nothing lost."""

import ctypes
import json
import os
import shutil
import subprocess
import sys

import pytest
from midi_corpus import packaged_midi_files

from musenet_jax.config import load_config
from musenet_jax.data import builder as builder_lib
from musenet_jax.data.pipeline import open_split
from musenet_jax.data.prepare import BUILD_INPUTS, prepare
from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.errors import UserError

PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2


def _without_root_file_access() -> None:
    """In the child before exec: drop the capabilities that let root read any file, so a chmod 000 file
    fails with EACCES for root too (tests here run as root)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def cli(*args, no_root_access: bool = False):
    preexec = _without_root_file_access if no_root_access and os.geteuid() == 0 else None
    return subprocess.run(
        [sys.executable, "-m", "musenet_jax.cli.main", *args],
        capture_output=True,
        text=True,
        preexec_fn=preexec,
    )


def one_error_line(result, status: int = 2) -> str:
    """The one line a failed command printed besides its progress bar."""
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.strip().splitlines() if "file/s]" not in line]
    return line


def good_files(n: int) -> list:
    """`n` real MIDI files with enough notes to become pieces."""
    return [p for p in packaged_midi_files() if p.stat().st_size > 1000][:n]


def folder_of(tmp_path, files, name="in"):
    folder = tmp_path / name
    folder.mkdir()
    for path in files:
        shutil.copy(path, folder / path.name)
    return folder


def prepare_cli(midi_dir, data_dir, *extra, no_root_access: bool = False):
    return cli(
        "prepare",
        "--source",
        "midi_dir",
        "--midi-dir",
        str(midi_dir),
        "--data-dir",
        str(data_dir),
        "--workers",
        "1",
        *extra,
        no_root_access=no_root_access,
    )


# 1. A failed rebuild must not destroy the dataset.


def test_failed_rebuild_leaves_the_previous_dataset(tmp_path, monkeypatch):
    midi_dir, data_dir = folder_of(tmp_path, good_files(4)), tmp_path / "tfds"
    first = prepare("midi_dir", str(data_dir), midi_dir=str(midi_dir), workers=1, show_progress=False)
    folder = builder_lib.dataset_dir(data_dir, "midi_dir")
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    shutil.copy(good_files(5)[-1], midi_dir / "new.mid")  # the inputs change: a rebuild is due

    def disk_full(self, items):
        yield from []
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(builder_lib.MusenetMidi, "_generate_examples", disk_full)
    with pytest.raises(UserError, match="No space left on device.*; the previous dataset is kept as it was"):
        prepare("midi_dir", str(data_dir), midi_dir=str(midi_dir), workers=1, show_progress=False)
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in data_dir.iterdir()] == ["musenet_midi"]  # no half-built leftovers
    monkeypatch.undo()
    again = prepare("midi_dir", str(data_dir), midi_dir=str(midi_dir), workers=1, show_progress=False)
    assert not again.reused and again.files_ok == first.files_ok + 1
    assert json.loads((folder / BUILD_INPUTS).read_text())["summary"]["files_ok"] == again.files_ok


# 2. Small and odd corpora.


def test_one_file_folder_builds_with_empty_splits_said(tmp_path):
    midi_dir, data_dir = folder_of(tmp_path, good_files(1)), tmp_path / "tfds"
    result = prepare_cli(midi_dir, data_dir, "--json")
    assert result.returncode == 0, result.stderr
    examples = json.loads(result.stdout)["examples"]
    assert sum(examples.values()) == 1 and sorted(examples.values()) == [0, 0, 1]
    text = prepare_cli(midi_dir, data_dir)
    assert text.stdout.count("(empty: add files to fill it)") == 2
    [empty] = [name for name, n in examples.items() if n == 0][:1]
    cfg = load_config("tiny", [f"data.data_dir={data_dir}", "data.source=midi_dir"])
    with pytest.raises(UserError, match=rf"split '{empty}' of musenet_midi/midi_dir .* is empty.*add MIDI"):
        open_split(cfg.data, cfg.encoding, empty)


def test_three_files_fill_every_split(tmp_path):
    summary = prepare(
        "midi_dir",
        str(tmp_path / "tfds"),
        midi_dir=str(folder_of(tmp_path, good_files(3))),
        workers=1,
        show_progress=False,
    )
    assert sorted(summary.examples.values()) == [1, 1, 1]


def test_empty_folder_is_one_line(tmp_path):
    (tmp_path / "in").mkdir()
    line = one_error_line(prepare_cli(tmp_path / "in", tmp_path / "tfds"))
    assert "no MIDI files (.mid, .midi) found under" in line


def test_folder_of_only_bad_files_is_one_line(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "empty.mid").write_bytes(b"")
    (folder / "notes.mid").write_text("a text file named .mid")
    line = one_error_line(prepare_cli(folder, tmp_path / "tfds"))
    assert "none of the 2 input files under" in line and "(empty 1, not_midi 1)" in line


def test_data_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "tfds").write_text("not a folder")
    line = one_error_line(prepare_cli(folder_of(tmp_path, good_files(1)), tmp_path / "tfds"))
    assert "is a file, not a folder" in line


# 3. A file name that is not UTF-8.


def test_file_name_that_is_not_utf8_is_kept(tmp_path):
    midi_dir, data_dir = folder_of(tmp_path, good_files(3)), tmp_path / "tfds"
    latin1 = os.fsdecode(b"caf\xe9.mid")
    shutil.copy(good_files(4)[-1], midi_dir / latin1)
    summary = prepare("midi_dir", str(data_dir), midi_dir=str(midi_dir), workers=1, show_progress=False)
    assert summary.files_ok == 4 and not summary.skipped_by_reason
    builder = builder_lib.make_builder("midi_dir", data_dir, EncodingConfig())
    sources = {
        ex["source"].decode() for split in builder.info.splits for ex in builder.as_data_source(split=split)
    }
    assert "caf\\xe9.mid" in sources
    result = cli("encode", str(midi_dir / latin1), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "out" / os.fsdecode(b"caf\xe9.json")).read_text())
    assert record["source"].endswith("caf\\xe9.mid")


# 4. Unreadable files: the right reason, and the files after them still encoded.


@pytest.fixture()
def unreadable_folder(tmp_path):
    good = good_files(3)
    folder = folder_of(tmp_path, good)
    (folder / "a_locked.mid").write_bytes(good[0].read_bytes())
    (folder / "a_locked.mid").chmod(0)
    (folder / "b_dangling.mid").symlink_to(tmp_path / "moved_away.mid")
    os.mkfifo(folder / "c_pipe.mid")
    (folder / "d_folder.mid").mkdir()  # a folder named .mid: its MIDI files count, it is not a file itself
    shutil.copy(good[1], folder / "d_folder.mid" / "inner.mid")
    return folder, good


def test_encode_carries_on_past_unreadable_files(unreadable_folder, tmp_path):
    folder, good = unreadable_folder
    result = cli("encode", str(folder), "-o", str(tmp_path / "out"), no_root_access=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{folder}/a_locked.mid: unreadable: permission denied" in result.stderr
    assert f"{folder}/b_dangling.mid: unreadable: broken symbolic link" in result.stderr
    assert f"{folder}/c_pipe.mid: unreadable: not a regular file" in result.stderr
    encoded = sorted(p.stem for p in (tmp_path / "out").glob("[!.]*.json"))
    assert encoded == sorted([p.stem for p in good] + ["inner"])
    assert "skipped 3: " in result.stdout
    assert all(name in result.stdout for name in ("a_locked.mid", "b_dangling.mid", "c_pipe.mid"))


def test_prepare_gives_unreadable_files_their_reason(unreadable_folder, tmp_path):
    folder, good = unreadable_folder
    result = prepare_cli(folder, tmp_path / "tfds", "--json", no_root_access=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["skipped_by_reason"] == {"unreadable": 3}
    skipped = builder_lib.read_skipped_report(tmp_path / "tfds", "midi_dir")
    report = {entry["source"]: entry["detail"] for entry in skipped}
    assert report["a_locked.mid"].endswith("unreadable: permission denied")
    assert report["b_dangling.mid"].endswith("unreadable: broken symbolic link")
    assert json.loads(result.stdout)["files_ok"] == len(good) + 1


# 5. A folder named .mid.


def test_encode_a_folder_named_mid(tmp_path):
    folder = folder_of(tmp_path, good_files(2), name="x.mid")
    result = cli("encode", str(folder), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "encoded 2 of 2 files" in result.stdout
    (tmp_path / "y.mid").mkdir()
    line = one_error_line(cli("encode", str(tmp_path / "y.mid"), "-o", str(tmp_path / "out2")))
    assert "no MIDI files (.mid, .midi) in" in line and "y.mid" in line


# 6. The missing-dataset error names the source and how to pick another.


def test_missing_dataset_names_the_source_to_select(tmp_path):
    data_dir = tmp_path / "tfds"
    prepare(
        "midi_dir",
        str(data_dir),
        midi_dir=str(folder_of(tmp_path, good_files(3))),
        workers=1,
        show_progress=False,
    )
    cfg = load_config("tiny", [f"data.data_dir={data_dir}"])
    with pytest.raises(UserError) as caught:
        open_split(cfg.data, cfg.encoding, "train")
    message = str(caught.value)
    assert "no prepared musenet_midi/music21 dataset (data.source=music21)" in message
    assert "`--set data.source=midi_dir`" in message and "\n" not in message
    cfg = load_config("tiny", [f"data.data_dir={tmp_path / 'nothing'}", "data.source=midi_dir"])
    with pytest.raises(UserError, match=r"--source midi_dir --midi-dir .*--set data.source=NAME"):
        open_split(cfg.data, cfg.encoding, "train")
