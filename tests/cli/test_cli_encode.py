"""`musenet-jax encode/decode/vocab` as a user runs them: real files, bad files, one-line errors."""

import json
import shutil
import subprocess
import sys

import miditoolkit
from midi_corpus import packaged_midi_files


def cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "musenet_jax.cli.main", *args], capture_output=True, text=True, cwd=cwd
    )


def test_encode_then_decode_real_files(tmp_path):
    sources = packaged_midi_files()[:3]
    result = cli("encode", *map(str, sources), "-o", str(tmp_path / "json"), "--composer", "bach")
    assert result.returncode == 0, result.stderr
    records = sorted((tmp_path / "json").glob("[!.]*.json"))  # not the hidden manifest of what encode wrote
    assert len(records) == 3
    record = json.loads(records[0].read_text())
    assert record["tokens"][0] == "composer:bach" and len(record["ids"]) == len(record["tokens"])
    result = cli("decode", *map(str, records), "-o", str(tmp_path / "mid"))
    assert result.returncode == 0, result.stderr
    for mid in (tmp_path / "mid").glob("*.mid"):
        assert miditoolkit.MidiFile(str(mid)).instruments


def test_corrupt_file_is_one_line_and_nonzero(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01" + b"\xff" * 7)
    result = cli("encode", str(bad), "-o", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if "bad.mid" in line]
    assert "corrupt MIDI" in line


def test_folder_with_bad_files_keeps_the_good_ones(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good = packaged_midi_files()[:2]
    for path in good:
        shutil.copy(path, folder / path.name)
    (folder / "empty.mid").write_bytes(b"")
    (folder / "notes.mid").write_text("this is a text file, not MIDI")
    result = cli("encode", str(folder), "-o", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert sorted(p.stem for p in (tmp_path / "out").glob("[!.]*.json")) == sorted(p.stem for p in good)
    assert "empty.mid: empty file" in result.stderr
    assert "notes.mid: not a MIDI file" in result.stderr


def test_unknown_composer_is_one_line(tmp_path):
    result = cli("encode", str(packaged_midi_files()[0]), "-o", str(tmp_path), "--composer", "bahc")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "valid: bach" in result.stderr


def test_vocab_json_reports_size_and_groups():
    result = cli("vocab", "--json")
    report = json.loads(result.stdout)
    assert report["size"] == sum(report["groups"].values())
    assert report["groups"]["instrument"] == 10 and "unknown" in report["composers"]


def test_encode_does_not_import_jax(tmp_path):
    code = (
        "import sys; from musenet_jax.cli.main import main; "
        f"main(['encode', {str(packaged_midi_files()[0])!r}, '-o', {str(tmp_path)!r}]); "
        "assert 'jax' not in sys.modules, 'encode imported jax'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
