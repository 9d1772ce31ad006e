"""`prepare --source maestro_v3 / lakh_full` on archives made here in the exact upstream layout (MAESTRO's
CSV columns and year folders in its zip; Lakh's `lmd_full/<hex>/<md5>.mid` in its tar.gz), no network:
the upstream splits, MAESTRO's composers as labels and its title and year as features, the license said."""

from __future__ import annotations

import csv
import pathlib
import shutil
import tarfile
import zipfile

import pytest
import tensorflow_datasets as tfds
from midi_corpus import packaged_midi_files

from musenet_jax.cli.main import main
from musenet_jax.data.builder import dataset_dir
from musenet_jax.data.convert import MIN_NOTES
from musenet_jax.data.corpora import LAKH_FULL, MAESTRO_V3
from musenet_jax.data.prepare import prepare
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.errors import UserError

MAESTRO_COLUMNS = [
    "canonical_composer", "canonical_title", "split", "year", "midi_filename", "audio_filename", "duration",
]  # fmt: skip
COMPOSERS = ["Frédéric Chopin", "Johann Sebastian Bach", "Franz Schubert"]
SPLITS = ["train", "train", "train", "validation", "test"]


def usable_midi_files(n: int) -> list[pathlib.Path]:
    tokenizer = Tokenizer()
    files = [p for p in packaged_midi_files() if len(tokenizer.midi_to_events(p)) >= MIN_NOTES]
    assert len(files) >= n
    return files[:n]


def dataset(data_dir: pathlib.Path, source: str):
    (version,) = [p for p in dataset_dir(data_dir, source).iterdir() if p.name[0].isdigit()]
    return tfds.builder_from_directory(str(version))


def test_maestro_from_its_zip_keeps_its_splits_composers_titles_and_years(tmp_path, capsys):
    rows, files = [], usable_midi_files(10)
    staging = tmp_path / "staging" / "maestro-v3.0.0"
    for k, path in enumerate(files):
        name = f"{2004 + k % 3}/MIDI-Unprocessed_{k:02d}_R1_2004_wav.midi"
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, staging / name)
        year, audio = str(2004 + k % 3), name[:-5] + ".wav"
        rows.append([COMPOSERS[k % 3], f"Piece {k}", SPLITS[k % 5], year, name, audio, "61.2"])
    with (staging / "maestro-v3.0.0.csv").open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(MAESTRO_COLUMNS)
        writer.writerows(rows)
    manual = tmp_path / "manual"
    manual.mkdir()
    with zipfile.ZipFile(manual / MAESTRO_V3.archive, "w") as archive:
        for path in sorted(staging.rglob("*")):
            archive.write(path, path.relative_to(staging.parent).as_posix())

    data = tmp_path / "tfds"
    assert (
        main(["prepare", "--source", "maestro_v3", "--manual-dir", str(manual), "--data-dir", str(data)]) == 0
    )
    out = capsys.readouterr().out
    assert f"license of the corpus: {MAESTRO_V3.license}" in out
    assert (
        "composer labels added to the vocabulary: franz_schubert, frédéric_chopin, johann_sebastian_bach"
        in out
    )

    built = dataset(data, "maestro_v3")
    composers = built.info.features["composer"]
    expected = {row[4]: row for row in rows}
    seen = 0
    for split in ("train", "validation", "test"):
        for example in built.as_data_source(split=split):
            row = expected[example["source"].decode()]
            assert split == row[2]
            assert composers.int2str(example["composer"]) == "_".join(row[0].lower().split())
            assert example["title"].decode() == row[1] and example["year"] == int(row[3])
            seen += 1
    assert seen == len(rows)
    assert (data / "downloads" / "extracted" / MAESTRO_V3.archive).is_dir()  # the manual dir is left as is
    assert sorted(p.name for p in manual.iterdir()) == [MAESTRO_V3.archive]


def test_lakh_from_its_tarball_splits_by_the_first_hex_digit(tmp_path, capsys):
    staging = tmp_path / "staging" / "lmd_full"
    names = {}
    for k, path in enumerate(usable_midi_files(8)):
        first = "0123ef9e"[k]  # Lakh names files by MD5; the split follows its first hex digit
        md5 = first + f"{k:031x}"
        names[f"{first}/{md5}.mid"] = {"e": "validation", "f": "test"}.get(first, "train")
        (staging / first).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, staging / first / f"{md5}.mid")
    manual = tmp_path / "manual"
    manual.mkdir()
    with tarfile.open(manual / LAKH_FULL.archive, "w:gz") as archive:
        archive.add(staging, arcname="lmd_full")

    data = tmp_path / "tfds"
    summary = prepare("lakh_full", str(data), midi_dir=str(manual), workers=1, show_progress=False)
    assert summary.license == LAKH_FULL.license and summary.files_ok == len(names)
    assert summary.examples == {"train": 5, "validation": 2, "test": 1}
    built = dataset(data, "lakh_full")
    for split in summary.examples:
        for example in built.as_data_source(split=split):
            assert names[example["source"].decode()] == split
            assert built.info.features["composer"].int2str(example["composer"]) == "unknown"
    again = prepare("lakh_full", str(data), midi_dir=str(manual), workers=1, show_progress=False)
    assert again.reused


def test_prepare_offers_every_source_the_builder_has():
    from musenet_jax.cli.prepare import SOURCES as CLI_SOURCES  # kept apart so that `--help` needs no TFDS
    from musenet_jax.data.builder import SOURCES

    assert CLI_SOURCES == SOURCES


def test_a_manual_dir_without_the_corpus_is_one_line_naming_what_it_needs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds neither maestro-v3.0.0-midi.zip nor its extracted") as caught:
        prepare("maestro_v3", str(tmp_path / "tfds"), midi_dir=str(tmp_path / "empty"))
    assert "\n" not in str(caught.value) and MAESTRO_V3.url in str(caught.value)
