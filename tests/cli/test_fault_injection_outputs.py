"""Issue 29's data-loss and output items, as a user meets them through the real CLI: a user's file where an
output would go, a bundle exported onto itself, a full disk under generate and export (a real tmpfs),
a damaged bundle, stale fakes. Each asserts the exit status, the one line, and that the user's files are
byte for byte as they were."""

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

from musenet_jax.cli.main import main

REPO = pathlib.Path(__file__).resolve().parents[2]
GENERATE = ["--composer", "bach", "--instruments", "piano", "--seconds", "1"]


def _snapshot(folder: pathlib.Path) -> dict[str, bytes]:
    """Every file below `folder` (hidden ones included), by relative path: to compare byte for byte."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    return copy


# --- 1. generate never replaces a file it did not write ---------------------------------------------


@pytest.mark.slow
def test_generate_refuses_a_users_sample_file_and_replaces_its_own(tiny_run, tmp_path, capsys):
    from musenet_jax.app.generate import output_names
    from musenet_jax.render.audio import renderer

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    mine = out_dir / "sample_0.mid"
    mine.write_bytes(b"MThd my own piece")
    before = _snapshot(out_dir)
    args = ["generate", "--checkpoint", str(tiny_run), *GENERATE, "--out", str(out_dir)]
    rc, out, err = run_cli(capsys, [*args, "--num-samples", "1"])
    assert rc == 2
    line = one_error_line(err, "generate")
    assert f"{mine} exists and was not written by musenet-jax" in line and "choose another --out" in line
    assert _snapshot(out_dir) == before  # nothing written, nothing removed

    mine.unlink()
    assert run_cli(capsys, [*args, "--num-samples", "2"])[0] == 0
    rc, out, err = run_cli(capsys, [*args, "--num-samples", "1"])  # its own files: replaced or removed
    assert rc == 0, err
    audio = renderer()[0] is not None
    stale = len(output_names(2, audio)) - len(output_names(1, audio))  # sample_1's
    assert f"removed {stale} files of an earlier generate" in out + err
    left = sorted(p.name for p in out_dir.glob("sample_*"))
    assert left == sorted(output_names(1, audio)[:-1])  # all but ranking.json

    (out_dir / "sample_0.png").write_bytes(b"edited by hand")  # changed since: the user's now
    edited = _snapshot(out_dir)
    rc, out, err = run_cli(capsys, [*args, "--num-samples", "1"])
    assert rc == 2
    assert f"{out_dir / 'sample_0.png'} exists" in one_error_line(err, "generate")
    assert _snapshot(out_dir) == edited


# --- 2., 3., 22. export onto itself, over a bundle, on a full disk ----------------------------------


@pytest.mark.slow
def test_export_onto_its_own_source_is_refused(bundle_copy, tmp_path, capsys):
    before = _snapshot(bundle_copy)
    for out in (bundle_copy, bundle_copy.parent):  # the bundle itself, and a folder holding it
        rc, _, err = run_cli(capsys, ["export", "--checkpoint", str(bundle_copy), "--out", str(out)])
        assert rc == 2
        line = one_error_line(err, "export")
        assert f"--out {out} " in line and "the --checkpoint being exported" in line
        assert "export to another folder" in line
    assert _snapshot(bundle_copy) == before


@pytest.mark.slow
def test_export_keeps_a_users_file_in_an_earlier_bundle(tiny_run, bundle_copy, capsys):
    (bundle_copy / "notes.txt").write_text("mine")
    before = _snapshot(bundle_copy)
    rc, _, err = run_cli(capsys, ["export", "--checkpoint", str(tiny_run), "--out", str(bundle_copy)])
    assert rc == 2
    line = one_error_line(err, "export")
    assert f"{bundle_copy / 'notes.txt'} in it is not a bundle's file" in line and "move it out" in line
    assert _snapshot(bundle_copy) == before


@pytest.mark.slow
def test_export_over_a_bundle_on_a_full_disk_keeps_the_old_one(tiny_run, tiny_bundle, tmp_path, capsys):
    from musenet_jax.app.run import load_run

    size = sum(-(-p.stat().st_size // 4096) * 4096 for p in tiny_bundle.rglob("*") if p.is_file())
    with tmpfs(tmp_path / "disk", f"{size + 64 * 1024}") as disk:  # room for one bundle, not two
        bundle = disk / "bundle"
        shutil.copytree(tiny_bundle, bundle)
        (bundle / ".gitkeep").write_text("")
        before = _snapshot(bundle)
        rc, _, err = run_cli(capsys, ["export", "--checkpoint", str(tiny_run), "--out", str(bundle)])
        assert rc == 2
        line = one_error_line(err, "export")
        assert "No space left on device" in line and str(disk) in line
        assert _snapshot(bundle) == before  # the old bundle, byte for byte
        assert sorted(p.name for p in disk.iterdir()) == ["bundle"]  # no staging folder left behind
        assert load_run(bundle).step == 3


@pytest.mark.slow
def test_an_export_killed_midway_leaves_a_whole_bundle(tiny_run, bundle_copy, tmp_path):
    """SIGTERM as soon as the staging folder appears: whichever moment it lands in, --out is the old bundle
    byte for byte or a complete new one, never an empty or partial folder; the next export cleans up."""
    from musenet_jax.app.bundle import verify_checksums

    (bundle_copy / ".gitkeep").write_text("")
    before = _snapshot(bundle_copy)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    command = ["export", "--checkpoint", str(tiny_run), "--out", str(bundle_copy)]
    export = subprocess.Popen([sys.executable, "-m", "musenet_jax.cli.main", *command], env=env)
    deadline = time.monotonic() + 300
    try:
        while export.poll() is None and not list(tmp_path.glob(".bundle.staged-*")):
            assert time.monotonic() < deadline, "export did not start writing within 300 s"
            time.sleep(0.01)
    finally:
        export.send_signal(signal.SIGTERM)
        export.wait()
    if _snapshot(bundle_copy) != before:
        verify_checksums(bundle_copy, str(bundle_copy))  # a complete new bundle
    assert main(command) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # the killed one's staging removed
    assert (bundle_copy / ".gitkeep").exists()  # hidden files are carried into the new bundle


@pytest.mark.slow
def test_generate_on_a_full_disk_names_the_folder_and_leaves_no_partial_file(tiny_run, tmp_path, capsys):
    with tmpfs(tmp_path / "disk", "12k") as disk:
        (disk / "notes.txt").write_text("mine")
        rc, _, err = run_cli(
            capsys,
            ["generate", "--checkpoint", str(tiny_run), *GENERATE, "--num-samples", "1", "--out", str(disk)],
        )
        assert rc == 2
        line = one_error_line(err, "generate")
        assert f"{disk}: No space left on device; free some space there" in line
        assert sorted(p.name for p in disk.iterdir()) == ["notes.txt"]  # no 0-byte sample_0.mid
        assert (disk / "notes.txt").read_text() == "mine"


# --- 4. decode never replaces the original -----------------------------------------------------------


def test_decode_next_to_the_original_refuses_to_overwrite_it(tmp_path, capsys):
    from midi_corpus import packaged_midi_files

    original = tmp_path / "rt" / "x.mid"
    original.parent.mkdir()
    shutil.copy(packaged_midi_files()[0], original)
    assert run_cli(capsys, ["encode", str(original), "-o", str(tmp_path / "rt")])[0] == 0
    before = original.read_bytes()
    rc, _, err = run_cli(capsys, ["decode", str(tmp_path / "rt" / "x.json"), "-o", str(tmp_path / "rt")])
    assert rc == 2
    line = one_error_line(err, "decode")
    assert f"{original} exists and was not written by musenet-jax" in line and "another -o" in line
    assert original.read_bytes() == before

    out = tmp_path / "decoded"
    for _ in range(2):  # its own output is replaced on a rerun
        assert run_cli(capsys, ["decode", str(tmp_path / "rt" / "x.json"), "-o", str(out)])[0] == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["x.mid"]


def test_encode_next_to_a_users_json_refuses_to_overwrite_it(tmp_path, capsys):
    """The mirror of item 4: `encode x.mid -o rt` where rt/x.json is the user's own file."""
    from midi_corpus import packaged_midi_files

    folder = tmp_path / "rt"
    folder.mkdir()
    shutil.copy(packaged_midi_files()[0], folder / "x.mid")
    mine = folder / "x.json"
    mine.write_text('{"my": "notes"}')
    rc, _, err = run_cli(capsys, ["encode", str(folder / "x.mid"), "-o", str(folder)])
    assert rc == 2
    line = one_error_line(err, "encode")
    assert f"{mine} exists and was not written by musenet-jax" in line and "another -o" in line
    assert mine.read_text() == '{"my": "notes"}'
    out = tmp_path / "encoded"
    for _ in range(2):  # its own output is replaced on a rerun
        assert run_cli(capsys, ["encode", str(folder / "x.mid"), "-o", str(out)])[0] == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["x.json"]


# --- 6. bundles carry checksums -------------------------------------------------------------------


@pytest.mark.slow
def test_a_bundle_with_flipped_bytes_is_refused_in_one_line(bundle_copy, tmp_path, capsys):
    params = bundle_copy / "model.safetensors"
    data = bytearray(params.read_bytes())
    for k in range(64):  # 64 bytes in the middle of the tensors, the header untouched
        data[len(data) // 2 + k] ^= 0x5A
    params.write_bytes(bytes(data))
    rc, _, err = run_cli(
        capsys, ["generate", "--checkpoint", str(bundle_copy), *GENERATE, "--out", str(tmp_path / "out")]
    )
    assert rc == 2
    line = one_error_line(err, "generate")
    assert f"{params} is damaged or was changed" in line and "export the bundle again" in line


def test_the_packaged_bundle_carries_checksums_of_every_file():
    from musenet_jax.app.bundle import CHECKSUMS_KEY, file_checksums, verify_checksums
    from musenet_jax.app.sources import bundled_model_dir

    folder = bundled_model_dir()
    recorded = json.loads((folder / "bundle.json").read_text())[CHECKSUMS_KEY]
    assert {"model.safetensors", "config.json", "vocab.json"} <= set(recorded)
    assert set(recorded) == set(file_checksums(folder))  # the critic's files too, when it has one
    verify_checksums(folder, "bundled")


# --- 9. fakes are exactly this run's --------------------------------------------------------------------


@pytest.mark.slow
def test_make_fakes_replaces_its_own_and_refuses_a_users_pieces(tiny_run, tmp_path, capsys):
    fakes = tmp_path / "fakes"
    args = ["critic", "make-fakes", "--checkpoint", str(tiny_run), "--out", str(fakes)]
    assert run_cli(capsys, [*args, "--num", "2"])[0] == 0
    rc, out, err = run_cli(capsys, [*args, "--num", "1"])
    assert rc == 0, err
    assert sorted(p.name for p in fakes.iterdir() if not p.name.startswith(".")) == [
        "fake_00000.mid",
        "fake_00000.npy",
    ]

    mine = fakes / "mine.mid"
    shutil.copy(fakes / "fake_00000.mid", mine)
    before = _snapshot(fakes)
    rc, _, err = run_cli(capsys, [*args, "--num", "1"])
    assert rc == 2
    line = one_error_line(err, "critic")
    assert f"{mine} exists and was not written by musenet-jax" in line and "choose another --out" in line
    assert _snapshot(fakes) == before


def _dead_pid() -> int:
    finished = subprocess.Popen(["true"])
    finished.wait()  # reaped: no process has this id now
    return finished.pid


def test_a_killed_writers_leftovers_are_cleaned_and_a_set_aside_folder_put_back(tmp_path):
    """The states a kill can leave, as files: a staging folder (removed by the next writer) and, killed
    between its two renames, the old folder set aside with none in its place (put back, byte for byte)."""
    from etils import epath

    from musenet_jax.outputs import folder_staged_beside

    pid = _dead_pid()
    staged = tmp_path / f".bundle.staged-{pid}-0a0b0c0d"
    staged.mkdir()
    (staged / "model.safetensors").write_bytes(b"half")
    aside = tmp_path / f".bundle.replaced-{pid}-0a0b0c0d"
    aside.mkdir()
    (aside / "bundle.json").write_text("the old bundle")
    mine = tmp_path / ".bundle.staged-notes"  # not of the writer's naming: left alone
    mine.write_text("mine")
    with folder_staged_beside(epath.Path(tmp_path / "bundle")) as staging:
        assert staging.exists() and not staged.exists()
        assert (tmp_path / "bundle" / "bundle.json").read_text() == "the old bundle" and not aside.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bundle.staged-notes", "bundle"]
