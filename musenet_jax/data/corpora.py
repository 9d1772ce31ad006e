"""Standard corpora as `prepare` sources: MAESTRO v3 and the Lakh MIDI dataset (full).

Each is read in its upstream layout, from a folder given as the manual dir (the archive as downloaded, or
it extracted) or downloaded through TFDS's download manager. The upstream splits are kept: MAESTRO's own
CSV (`split` column), Lakh's by the first hex digit of a file's MD5 name (`e` validation, `f` test, the rest
train, as the Anticipatory Music Transformer splits it). MAESTRO's composer labels are its
`canonical_composer` column (as `label_name` writes it: `Frédéric Chopin` -> `frédéric_chopin`); Lakh has
none (`unknown`). MAESTRO's title and year are kept as features of each example.
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
import shutil

import tensorflow_datasets as tfds

from musenet_jax.data.convert import SPLIT_PERCENT
from musenet_jax.data.source_files import SourceFile, midi_dir_sources, music21_sources
from musenet_jax.encoding.vocab import UNKNOWN_COMPOSER, label_name
from musenet_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Where a corpus comes from and how its files are laid out."""

    name: str
    url: str  # the archive, as TFDS's download manager fetches it
    archive: str  # its file name, as found in a manual dir
    marker: str  # a path inside the extracted archive that says "this is the corpus root"
    license: str
    homepage: str


MAESTRO_V3 = Corpus(
    name="maestro_v3",
    url="https://storage.googleapis.com/magentadata/datasets/maestro/v3.0.0/maestro-v3.0.0-midi.zip",
    archive="maestro-v3.0.0-midi.zip",
    marker="maestro-v3.0.0/maestro-v3.0.0.csv",
    license="CC BY-NC-SA 4.0 (Creative Commons Attribution-NonCommercial-ShareAlike 4.0)",
    homepage="https://magenta.tensorflow.org/datasets/maestro",
)
LAKH_FULL = Corpus(
    name="lakh_full",
    url="http://hog.ee.columbia.edu/craffel/lmd/lmd_full.tar.gz",
    archive="lmd_full.tar.gz",
    marker="lmd_full",
    license="CC BY 4.0 (Creative Commons Attribution 4.0)",
    homepage="https://colinraffel.com/projects/lmd/",
)
CORPORA = {c.name: c for c in (MAESTRO_V3, LAKH_FULL)}
MAESTRO_SPLITS = frozenset(name for name, _ in SPLIT_PERCENT)  # MAESTRO names its splits as we do
LAKH_SPLIT_BY_FIRST_HEX = {"e": "validation", "f": "test"}  # the other 14 digits: train


def find_root(corpus: Corpus, folder: str | pathlib.Path) -> pathlib.Path | None:
    """The folder holding `corpus.marker`: `folder` itself or one level below (an archive extracted into a
    folder of its own); None when there is none."""
    folder = pathlib.Path(folder)
    for candidate in (folder, *sorted(p for p in folder.iterdir() if p.is_dir())):
        if (candidate / corpus.marker).exists():
            return candidate
    return None


def corpus_root(corpus: Corpus, manual_dir: str | None, download_dir: str | pathlib.Path) -> pathlib.Path:
    """The extracted corpus: found in `manual_dir` (extracted there, or its archive extracted once into
    `download_dir`), or downloaded by TFDS's download manager (which records the URL's size and checksum)
    when no manual dir is given."""
    download_dir = pathlib.Path(download_dir)
    if manual_dir is None:
        manager = tfds.download.DownloadManager(download_dir=str(download_dir))
        archive = pathlib.Path(manager.download(corpus.url))
    else:
        folder = pathlib.Path(manual_dir)
        if not folder.is_dir():
            raise UserError(
                f"--manual-dir {manual_dir!r} is not a folder; give the folder holding {corpus.archive}"
            )
        root = find_root(corpus, folder)
        if root is not None:
            return root
        archive = folder / corpus.archive
        if not archive.is_file():
            raise UserError(
                f"{manual_dir} holds neither {corpus.archive} nor its extracted {corpus.marker}; "
                f"download it from {corpus.url} into that folder, or leave out --manual-dir to download it"
            )
    root = find_root(corpus, extract_once(archive, download_dir / "extracted" / corpus.archive))
    if root is None:
        raise UserError(f"{archive.name} extracted has no {corpus.marker}: not the {corpus.name} archive")
    return root


def extract_once(archive: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    """`archive` unpacked into `target`, unless an earlier run finished that. (TFDS's extractor needs
    TensorFlow; the standard library's unpacking does not.)"""
    done = target / ".extracted"
    if done.exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        shutil.unpack_archive(str(archive), str(partial))
    except (shutil.ReadError, OSError, EOFError, ValueError) as err:
        raise UserError(f"cannot extract {archive.name}: {err}; download it again") from None
    partial.rename(target)
    done.touch()
    return target


def maestro_sources(root: str | pathlib.Path) -> list[SourceFile]:
    """One source per row of MAESTRO's CSV, with its split, composer, title and year."""
    table = pathlib.Path(root) / MAESTRO_V3.marker
    found = []
    with table.open(newline="", encoding="utf-8") as rows:
        for row in csv.DictReader(rows):
            split = row["split"].strip()
            if split not in MAESTRO_SPLITS:
                raise UserError(f"{table.name}: split {split!r} of {row['midi_filename']} is not one of "
                                f"{', '.join(sorted(MAESTRO_SPLITS))}")  # fmt: skip
            composer = label_name(row["canonical_composer"]) or UNKNOWN_COMPOSER
            extra = (("title", row["canonical_title"].strip()), ("year", int(row["year"])))
            path = table.parent / row["midi_filename"]
            found.append(SourceFile(str(path), row["midi_filename"], composer, "midi", split, extra))
    return sorted(found, key=lambda s: s.source_id)


def lakh_sources(root: str | pathlib.Path) -> list[SourceFile]:
    """Every `lmd_full/<hex>/<md5>.mid`, split by the MD5's first hex digit."""
    folder = pathlib.Path(root) / LAKH_FULL.marker
    found = []
    for path in sorted(folder.glob("*/*.mid")):
        split = LAKH_SPLIT_BY_FIRST_HEX.get(path.stem[:1].lower(), "train")
        rel = path.relative_to(folder).as_posix()
        found.append(SourceFile(str(path), rel, UNKNOWN_COMPOSER, "midi", split))
    return found


CORPUS_SOURCES = {MAESTRO_V3.name: maestro_sources, LAKH_FULL.name: lakh_sources}


def list_sources(source: str, root: str | pathlib.Path | None) -> list[SourceFile]:
    """Every input file of a `prepare` source with its label (and upstream split), before any `--limit`;
    `root` is the MIDI folder or the extracted corpus (`corpus_root`)."""
    if source == "music21":
        return music21_sources()
    if source == "midi_dir":
        return midi_dir_sources(root or "")
    return CORPUS_SOURCES[source](root or "")
