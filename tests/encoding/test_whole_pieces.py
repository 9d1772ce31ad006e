"""Whole pieces (issue 12): long real MIDI is encoded, stored and cropped whole; a cut is opt-in, counted."""

import json
import shutil
import subprocess
import sys

import miditoolkit
import numpy as np
import pytest
from midi_corpus import concatenate_in_time, export_corpus_scores, packaged_midi_files

from musenet_jax.config import load_config
from musenet_jax.data.builder import make_builder
from musenet_jax.data.pipeline import CropExample, open_split
from musenet_jax.data.prepare import prepare
from musenet_jax.encoding import midi_io
from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.encoding.fidelity import matched_fraction
from musenet_jax.encoding.timing import duration_steps
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.encoding.vocab import Vocabulary
from musenet_jax.errors import UserError

# The default vocabulary's fingerprint before pieces were kept whole: checkpoints made with it stay valid.
FINGERPRINT_BEFORE = "2e4290744e4007fd1ea4800df659233042f4b7d113a2e2ea1c7f8f69913e8a65"


@pytest.fixture(scope="module")
def long_files(tmp_path_factory):
    """A 40-minute piece of every packaged MIDI file and corpus score one after another, and a 30-minute
    multitrack piece (8 GM instruments, 85 tempo changes, drums) from test04.mid, 1390.mid and test09.mid."""
    folder = tmp_path_factory.mktemp("long")
    sources = packaged_midi_files() + export_corpus_scores(folder / "scores")
    by_name = {p.name: p for p in sources}
    band = [by_name[name] for name in ("test04.mid", "1390.mid", "test09.mid")]
    return [
        concatenate_in_time(sources, folder / "concert.mid", minutes=40),
        concatenate_in_time(band, folder / "band_with_drums.mid", minutes=30, with_drums=True),
    ]


def all_notes(path) -> midi_io.Events:
    """Every sounding note of a file, read without the tokenizer (so without any cut)."""
    return midi_io.midi_to_events(miditoolkit.MidiFile(str(path)))


@pytest.mark.parametrize("parser", ["symusic", "miditoolkit"])
def test_long_pieces_round_trip_whole(long_files, parser):
    tokenizer = Tokenizer(parser=parser)
    for path, minutes in zip(long_files, (40, 30)):
        original = all_notes(path)
        assert original.start_s.max() > minutes * 60 and len(original) > 20_000
        decoded = tokenizer.midi_to_events(tokenizer.decode(tokenizer.encode(path)))
        fraction = matched_fraction(original, decoded, tokenizer.vocab)
        minutes_long = original.start_s.max() / 60
        print(f"\n{path.name}: {fraction:.4%} of {len(original)} notes kept, {minutes_long:.1f} min")
        assert fraction >= 0.999
    drums = all_notes(long_files[1]).family == tokenizer.vocab.families.index("drums")
    assert drums.sum() > 1000


def test_fingerprint_does_not_depend_on_the_cut():
    assert Vocabulary().fingerprint() == FINGERPRINT_BEFORE
    assert Vocabulary(EncodingConfig(max_seconds=60.0)).fingerprint() == FINGERPRINT_BEFORE
    assert Vocabulary(EncodingConfig(velocity_bins=8)).fingerprint() != FINGERPRINT_BEFORE


def test_max_seconds_must_be_positive():
    with pytest.raises(UserError, match=r"encoding.max_seconds must be seconds > 0 or null"):
        load_config("tiny", ["encoding.max_seconds=0"])
    assert load_config("tiny", ["encoding.max_seconds=null"]).encoding.max_seconds is None


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "musenet_jax.cli.main", *args], capture_output=True, text=True
    )


def test_encode_says_how_many_notes_a_cut_removes(long_files, tmp_path):
    concert = long_files[0]
    expected_cut = int((all_notes(concert).start_s >= 60).sum())
    result = cli("encode", str(concert), "-o", str(tmp_path), "--set", "encoding.max_seconds=60")
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stderr.splitlines() if "concert.mid" in line]
    assert f"cut {expected_cut} of {len(all_notes(concert))} notes" in line
    assert f"{expected_cut} notes cut" in result.stdout
    ids = json.loads((tmp_path / "concert.json").read_text())["ids"]
    assert duration_steps(np.asarray(ids), Vocabulary()) <= 6000


def test_encode_refuses_a_cut_that_removes_every_note(tmp_path):
    late = packaged_midi_files()[-1]  # miditoolkit's 1390.mid; its first note starts at 4.5 s
    assert late.name == "1390.mid" and all_notes(late).start_s.min() > 4
    result = cli("encode", str(late), "-o", str(tmp_path), "--set", "encoding.max_seconds=2")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if "1390.mid" in line]
    assert f"all {len(all_notes(late))} notes start after encoding.max_seconds=2 s" in line
    assert not list(tmp_path.glob("*.json"))


@pytest.fixture(scope="module")
def long_dataset(long_files, tmp_path_factory):
    midi_dir = tmp_path_factory.mktemp("long_in")
    for path in long_files:
        shutil.copy(path, midi_dir / path.name)
    data_dir = tmp_path_factory.mktemp("long_tfds")
    summary = prepare("midi_dir", str(data_dir), midi_dir=str(midi_dir), workers=1, show_progress=False)
    return data_dir, midi_dir, summary


def test_prepare_stores_long_pieces_whole(long_dataset, long_files):
    data_dir, _, summary = long_dataset
    assert summary.notes_cut == 0 and summary.max_seconds is None
    builder = make_builder("midi_dir", data_dir, EncodingConfig())
    stored = {
        ex["source"].decode(): ex
        for split in builder.info.splits
        for ex in builder.as_data_source(split=split)
    }
    for path in long_files:
        assert stored[path.name]["n_notes"] == len(all_notes(path))
        assert stored[path.name]["duration_s"] > 30 * 60


def test_training_crops_carry_whole_piece_timing(long_dataset):
    data_dir, _, _ = long_dataset
    cfg = load_config("tiny", [f"data.data_dir={data_dir}", "data.source=midi_dir", "model.context=64"])
    tokenizer = Tokenizer(cfg.encoding)
    split = next(iter(make_builder("midi_dir", data_dir, cfg.encoding).info.splits))
    piece = open_split(cfg.data, cfg.encoding, split)[0]
    full = duration_steps(piece["ids"], tokenizer.vocab)
    crop = CropExample(tokenizer, cfg.data, cfg.model.context, augment=False)
    rows = [crop(piece, np.random.default_rng(seed)) for seed in range(8)]
    assert all(row["durations"] == full for row in rows) and full * tokenizer.step_s > 30 * 60
    late = max(int(row["times"][-1]) for row in rows)
    assert late * tokenizer.step_s > 240  # windows come from all over the piece, not its first 4 minutes


def test_prepare_reports_the_notes_a_cut_removes(long_dataset, long_files, tmp_path):
    _, midi_dir, _ = long_dataset
    expected = sum(int((all_notes(p).start_s >= 90).sum()) for p in long_files)
    result = cli(
        "prepare",
        "--source",
        "midi_dir",
        "--midi-dir",
        str(midi_dir),
        "--data-dir",
        str(tmp_path),
        "--workers",
        "1",
        "--json",
        "--set",
        "encoding.max_seconds=90",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["notes_cut"] == expected and summary["pieces_cut"] == 2 and summary["max_seconds"] == 90
    record = json.loads((tmp_path / "musenet_midi" / "midi_dir" / "build_inputs.json").read_text())
    assert record["summary"]["notes_cut"] == expected
    text = cli(
        "prepare",
        "--source",
        "midi_dir",
        "--midi-dir",
        str(midi_dir),
        "--data-dir",
        str(tmp_path),
        "--set",
        "encoding.max_seconds=90",
    )
    assert f"encoding.max_seconds=90: cut {expected:,} notes from 2 pieces" in text.stdout
    metadata = json.loads((tmp_path / "musenet_midi" / "midi_dir" / "2.0.0" / "metadata.json").read_text())
    assert metadata["encoding"]["max_seconds"] == 90
    # The cut decided which notes went in, not what tokens mean: a config without it reads the dataset.
    cfg = load_config("tiny", [f"data.data_dir={tmp_path}", "data.source=midi_dir"])
    splits = make_builder("midi_dir", tmp_path, cfg.encoding).info.splits
    assert sum(len(open_split(cfg.data, cfg.encoding, split)) for split in splits) == 2


def test_a_dataset_of_the_old_version_is_refused(long_dataset, tmp_path):
    """A 1.0.0 dataset (pieces cut at 240 s) left by an older musenet-jax: one line saying what to run,
    and `prepare` rebuilds instead of calling the old build "already prepared"."""
    data_dir, midi_dir, _ = long_dataset
    old_dir = tmp_path / "tfds"
    shutil.copytree(data_dir, old_dir)
    folder = old_dir / "musenet_midi" / "midi_dir"
    (folder / "2.0.0").rename(folder / "1.0.0")
    metadata = json.loads((folder / "1.0.0" / "metadata.json").read_text())
    metadata["encoding"]["max_seconds"] = 240.0
    (folder / "1.0.0" / "metadata.json").write_text(json.dumps(metadata))
    record = json.loads((folder / "build_inputs.json").read_text())
    for key in ("version", "max_seconds"):  # what 1.0.0's record lacked
        del record["inputs"][key]
    (folder / "build_inputs.json").write_text(json.dumps(record))
    cfg = load_config("tiny", [f"data.data_dir={old_dir}", "data.source=midi_dir"])
    with pytest.raises(UserError, match=r"version 1\.0\.0 \(pieces cut at 240 s\).*musenet-jax prepare"):
        open_split(cfg.data, cfg.encoding, "train")
    again = prepare("midi_dir", str(old_dir), midi_dir=str(midi_dir), workers=1, show_progress=False)
    assert not again.reused
    splits = make_builder("midi_dir", old_dir, cfg.encoding).info.splits
    assert sum(len(open_split(cfg.data, cfg.encoding, split)) for split in splits) == 2
