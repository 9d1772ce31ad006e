"""The musenet_midi TFDS builder on real inputs: a music21 subset and a folder with bad files."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from midi_corpus import packaged_midi_files

from musenet_jax.config import load_config
from musenet_jax.data.builder import MusenetMidi, check_encoding, make_builder, read_skipped_report
from musenet_jax.data.convert import MIN_NOTES
from musenet_jax.data.pipeline import open_split
from musenet_jax.data.prepare import prepare
from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.encoding.vocab import Vocabulary
from musenet_jax.errors import UserError


def test_music21_subset_builds_with_composer_labels(music21_data_dir):
    builder = make_builder("music21", music21_data_dir, EncodingConfig())
    splits = builder.info.splits
    assert set(splits) == {"train", "validation", "test"}
    train = builder.as_data_source(split="train")
    example = train[0]
    assert example["ids"].dtype == np.int32 and example["n_notes"] >= 8
    composers = builder.info.features["composer"]
    labels = {composers.int2str(train[i]["composer"]) for i in range(len(train))}
    assert labels - {"unknown"}, labels
    tokenizer = Tokenizer()
    assert tokenizer.composer_of(example["ids"]) == composers.int2str(example["composer"])


def test_folder_with_bad_files(mixed_midi_dir, tmp_path):
    summary = prepare("midi_dir", str(tmp_path), midi_dir=str(mixed_midi_dir), workers=2, show_progress=False)
    report = {entry["source"]: entry["reason"] for entry in read_skipped_report(tmp_path, "midi_dir")}
    bad = {"corrupt.mid": "corrupt", "empty.mid": "empty", "notes.mid": "not_midi"}
    assert {k: v for k, v in report.items() if v != "too_short"} == bad
    tokenizer = Tokenizer()
    short = {p.name for p in packaged_midi_files() if len(tokenizer.midi_to_events(p)) < MIN_NOTES}
    assert {k.split("/")[-1] for k, v in report.items() if v == "too_short"} == short
    n_good = len(packaged_midi_files()) - len(short)
    assert summary.files_ok == n_good
    assert sum(summary.examples.values()) == n_good
    builder = make_builder("midi_dir", tmp_path, EncodingConfig())
    sources = {
        builder.as_data_source(split=s)[i]["source"]
        for s in summary.examples
        for i in range(summary.examples[s])
    }
    assert {s.decode().split("/")[0] for s in sources} == {"bach", "mozart"}
    again = prepare("midi_dir", str(tmp_path), midi_dir=str(mixed_midi_dir), workers=2, show_progress=False)
    assert again.reused and again.examples == summary.examples


def test_split_is_stable_by_source_hash(music21_data_dir):
    from musenet_jax.data.convert import split_of

    assert split_of("bach/bwv66.6.mxl") == split_of("bach/bwv66.6.mxl")
    shares = (
        np.bincount([["train", "validation", "test"].index(split_of(f"x/{i}")) for i in range(4000)]) / 4000
    )
    np.testing.assert_allclose(shares, [0.9, 0.05, 0.05], atol=0.02)


def test_mismatched_encoding_is_refused(music21_data_dir):
    cfg = load_config("tiny", [f"data.data_dir={music21_data_dir}", "encoding.velocity_bins=8"])
    with pytest.raises(
        UserError,
        match=r"encoding.velocity_bins differ.*prepare it into another --data-dir with this encoding",
    ):
        open_split(cfg.data, cfg.encoding, "train")


def test_a_model_with_anticipation_on_a_dataset_with_new_composers_is_told_of_the_composers():
    """Datasets are stored plain: anticipation is no difference to report, new composer labels are."""
    plain = EncodingConfig()
    own = dataclasses.replace(plain, composers=(*plain.composers, "bill_evans"))
    metadata = {"encoding": dataclasses.asdict(own), "vocab_fingerprint": Vocabulary(own).fingerprint()}
    anticipating = dataclasses.replace(plain, anticipation_s=5.0)
    lacks = r"composer labels the model \(or config\) lacks: bill_evans"
    with pytest.raises(UserError, match=lacks) as caught:
        check_encoding(metadata, anticipating, "dataset own_tfds")
    assert "anticipation" not in str(caught.value)
    same = {"encoding": dataclasses.asdict(plain), "vocab_fingerprint": Vocabulary(plain).fingerprint()}
    check_encoding(same, anticipating, "dataset plain_tfds")  # the pipeline anticipates per window


def test_missing_dataset_says_what_to_run(tmp_path):
    cfg = load_config("tiny", [f"data.data_dir={tmp_path}"])
    with pytest.raises(UserError, match="musenet-jax prepare --source music21"):
        open_split(cfg.data, cfg.encoding, "train")


def test_prepare_cli_prints_a_summary(mixed_midi_dir, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "musenet_jax.cli.main",
            "prepare",
            "--source",
            "midi_dir",
            "--midi-dir",
            str(mixed_midi_dir),
            "--data-dir",
            str(tmp_path),
            "--workers",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert {k: v for k, v in summary["skipped_by_reason"].items() if k != "too_short"} == {
        "corrupt": 1,
        "empty": 1,
        "not_midi": 1,
    }
    assert tfds.builder_from_directory(f"{tmp_path}/musenet_midi/midi_dir/{MusenetMidi.VERSION}").info.splits


def _pieces(data_dir, summary) -> dict[str, list[int]]:
    builder = make_builder("midi_dir", data_dir, EncodingConfig())
    return {
        ex["source"].decode(): ex["ids"].tolist()
        for split in summary.examples
        for ex in builder.as_data_source(split=split)
    }


def test_beam_direct_runner_builds_what_local_workers_build(mixed_midi_dir, tmp_path):
    pytest.importorskip("apache_beam")
    local = prepare(
        "midi_dir", str(tmp_path / "local"), midi_dir=str(mixed_midi_dir), workers=1, show_progress=False
    )
    beam = prepare(
        "midi_dir",
        str(tmp_path / "beam"),
        midi_dir=str(mixed_midi_dir),
        show_progress=False,
        beam_options="--runner=DirectRunner",
    )
    assert beam.files_ok == local.files_ok and beam.skipped_by_reason == local.skipped_by_reason
    assert read_skipped_report(tmp_path / "beam", "midi_dir") == read_skipped_report(
        tmp_path / "local", "midi_dir"
    )
    assert _pieces(tmp_path / "beam", beam) == _pieces(tmp_path / "local", local)


def test_beam_options_without_beam_installed_is_a_user_error(mixed_midi_dir, tmp_path):
    try:
        import apache_beam  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match=r"musenet-jax\[beam\]"):
            prepare(
                "midi_dir", str(tmp_path), midi_dir=str(mixed_midi_dir), beam_options="--runner=DirectRunner"
            )
    else:
        pytest.skip("apache-beam is installed")


OVERFULL_SCORE = """<?xml version="1.0" encoding="UTF-8"?>
<score-partwise version="3.1">
  <part-list><score-part id="P1"><part-name>Violin</part-name></score-part></part-list>
  <part id="P1">
    <measure number="1">
      <attributes><divisions>7</divisions><time><beats>4</beats><beat-type>4</beat-type></time></attributes>
      <note><pitch><step>C</step><octave>4</octave></pitch><duration>28</duration><type>whole</type></note>
      <note><pitch><step>D</step><octave>4</octave></pitch><duration>1</duration><type>32nd</type></note>
    </measure>
    <measure number="2">{quarters}</measure>
    <measure number="3">{quarters}</measure>
  </part>
</score-partwise>
""".replace(
    "{quarters}",
    "<note><pitch><step>E</step><octave>4</octave></pitch><duration>7</duration><type>quarter</type></note>"
    * 4,
)


def test_scores_music21_repairs_convert_without_warnings_on_the_terminal(tmp_path):
    import warnings

    import music21

    from musenet_jax.data.convert import Example, convert
    from musenet_jax.data.source_files import SourceFile

    path = tmp_path / "overfull.musicxml"
    path.write_text(OVERFULL_SCORE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = convert(SourceFile(str(path), "overfull.musicxml", "bach", "score"), EncodingConfig())
    assert [type(r) for r in results] == [Example] and results[0].n_notes == 10
    assert caught == []
    with pytest.warns(UserWarning, match="overfull"):  # music21 does warn on this score
        music21.converter.parse(path, forceSource=True)


def test_a_file_past_the_time_limit_is_skipped_and_reported(tmp_path):
    """--file-timeout: a conversion that runs too long (here every one: a spawned worker needs longer
    than 1 ms to import music21) is stopped, and the files are skipped with reason `timeout`."""
    with pytest.raises(UserError, match=r"none of the 2 input files could be used \(timeout 2\)"):
        prepare("music21", str(tmp_path), limit=2, workers=1, file_timeout_s=0.001, show_progress=False)
