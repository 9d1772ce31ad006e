"""The `musenet_midi` TFDS builder: tokenized MIDI as ArrayRecord shards, readable without TensorFlow.

Configs: `music21` (the embedded corpus, no download), `midi_dir` (a user's folder as TFDS's manual
dir), and the standard corpora `maestro_v3` and `lakh_full` (`corpora.py`; their manual dir is the
extracted corpus, their upstream splits kept). Conversion runs in worker processes on this machine, or,
with `beam=True`, as an Apache Beam pipeline (`beam_convert.py`) on whatever runner the download config
names. Files that cannot be used are skipped,
counted by reason and listed in `skipped_files.json` beside the dataset. A split that gets no pieces (a
small folder) is left out of the dataset rather than failing the build. The dataset's metadata records the
encoding config (its composers are the dataset's labels, `data/labels.py`) and the vocabulary fingerprint
so that a pipeline or checkpoint with another encoding refuses it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import pathlib
from collections.abc import Iterator

import numpy as np
import pebble
import tensorflow_datasets as tfds
from etils import epath
from tqdm import tqdm

from musenet_jax.data import convert as convert_lib
from musenet_jax.data.corpora import CORPORA, LAKH_FULL, MAESTRO_V3, list_sources
from musenet_jax.data.source_files import SourceFile
from musenet_jax.data.split_groups import group_splits
from musenet_jax.encoding.anticipation import plain_encoding
from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.encoding.vocab import vocabulary
from musenet_jax.errors import UserError, unknown_choice
from musenet_jax.storage import is_url

SOURCES = ("music21", "midi_dir", *CORPORA)
SKIPPED_REPORT = "skipped_files.json"
MOVED_REPORT = "split_moves.json"  # pieces moved to their work's or their copies' split, with why


@dataclasses.dataclass(frozen=True)
class BuildStats:
    """What a build did: the summary `musenet-jax prepare` prints and the report it writes."""

    files_ok: int
    skipped: list[dict[str, str]]
    examples: dict[str, int]
    tokens: dict[str, int]
    per_composer: dict[str, dict[str, int]]
    notes_cut: int  # by `encoding.max_seconds`, from the pieces kept
    pieces_cut: int
    moved: list[dict[str, str]] = dataclasses.field(default_factory=list)  # `split_groups.group_splits`


class MusenetMidi(tfds.core.GeneratorBasedBuilder):
    """Tokenized MIDI pieces with composer labels; one example per piece."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "MuseNet encoding, ArrayRecord shards; every piece cut at 240 s.",
        "2.0.0": "Pieces stored whole (encoding.max_seconds defaults to no cut); a split may be empty.",
    }
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="music21", description="music21's bundled scores, composer-labelled"),
        tfds.core.BuilderConfig(name="midi_dir", description="a MIDI folder given as manual_dir"),
        tfds.core.BuilderConfig(
            name=MAESTRO_V3.name,
            description=f"MAESTRO v3.0.0 piano performances; license {MAESTRO_V3.license}",
        ),
        tfds.core.BuilderConfig(
            name=LAKH_FULL.name,
            description=f"the Lakh MIDI dataset, full ({LAKH_FULL.homepage}); license {LAKH_FULL.license}",
        ),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put MIDI files in the manual dir; first-level sub-folders name composers."

    def __init__(
        self,
        *,
        encoding: EncodingConfig = EncodingConfig(),
        limit: int | None = None,
        workers: int | None = None,
        file_timeout_s: float | None = None,
        show_progress: bool = True,
        beam: bool = False,
        sources: list[SourceFile] | None = None,
        **kwargs,
    ):
        self.encoding = encoding
        self.listed_sources = sources  # the input as `prepare` listed it (a Lakh listing takes minutes)
        self.vocab = vocabulary(encoding)
        self.limit = limit
        self.workers = workers or os.cpu_count() or 1
        self.file_timeout_s = file_timeout_s or None
        self.show_progress = show_progress
        self.beam = beam
        self._stats: BuildStats | None = None
        self._beam_splits: tuple[str, ...] = ()
        super().__init__(file_format="array_record", **kwargs)

    @property
    def stats(self) -> BuildStats | None:
        """What the last `download_and_prepare` converted and skipped (None before a build)."""
        if self._stats is None and self._beam_splits:
            from musenet_jax.data.beam_convert import read_outcomes

            kept, skipped = read_outcomes(self._beam_outcomes_dir(), self._beam_splits)
            self._stats = _stats(kept, skipped)
        return self._stats

    def _beam_outcomes_dir(self):
        return self.data_dir_root / self.name / self.builder_config.name / "beam_outcomes"

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            "ids": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "composer": tfds.features.ClassLabel(names=list(self.vocab.composers)),
            "source": tfds.features.Text(),
            "duration_s": np.float32,
            "n_notes": np.int32,
        }
        if self.builder_config.name == MAESTRO_V3.name:
            features |= {"title": tfds.features.Text(), "year": np.int32}
        corpus = CORPORA.get(self.builder_config.name)
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features),
            homepage=corpus.homepage if corpus else None,
            metadata=tfds.core.MetadataDict(
                encoding=dataclasses.asdict(self.encoding),
                vocab_fingerprint=self.vocab.fingerprint(),
                vocab_size=self.vocab.size,
                limit=self.limit,
            ),
        )

    def _list_sources(self, dl_manager) -> list[SourceFile]:
        manual = None if self.builder_config.name == "music21" else dl_manager.manual_dir
        sources = self.listed_sources
        if sources is None:
            sources = list_sources(self.builder_config.name, manual)
        unlabelled = sorted({s.composer for s in sources} - set(self.vocab.composers))
        if unlabelled:
            raise UserError(
                f"the encoding has no composer token for the label(s) {', '.join(unlabelled)} of the input; "
                "build with `musenet-jax prepare`, which adds the dataset's labels to the vocabulary"
            )
        return spread_subset(sources, self.limit)

    def _split_generators(self, dl_manager):
        sources = self._list_sources(dl_manager)
        where = f" under {dl_manager.manual_dir}" if self.builder_config.name != "music21" else ""
        if not sources:
            raise UserError(f"no input files found{where}; nothing to prepare")
        if self.beam:
            return self._beam_split_transforms(sources)
        results = self._convert_all(sources)
        examples = [r for r in results if isinstance(r, convert_lib.Example)]
        skipped = [convert_lib.outcome(r) for r in results if isinstance(r, convert_lib.Skipped)]
        if not examples:
            reasons = collections.Counter(s["reason"] for s in skipped)
            counts = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
            raise UserError(
                f"none of the {len(sources)} input files{where} could be used ({counts}); nothing to prepare"
            )
        splits, moved = _assign_splits(examples, self.encoding)
        kept = {name: [convert_lib.outcome(ex) for ex in items] for name, items in splits.items()}
        self._stats = dataclasses.replace(_stats(kept, skipped), moved=moved)
        # TFDS cannot finalize a split without examples: an empty one is left out (`open_split` says so).
        return {name: self._generate_examples(items) for name, items in splits.items() if items}

    def _beam_split_transforms(self, sources: list[SourceFile]) -> dict:
        """One Beam transform per split; files go to their upstream split or by hash before conversion
        (no lending: a corpus big enough to need Beam fills every split); a split with no files is left
        out."""
        from musenet_jax.data.beam_convert import ConvertSplit

        by_split: dict[str, list[SourceFile]] = {name: [] for name, _ in convert_lib.SPLIT_PERCENT}
        for source in sources:
            by_split[source.split or convert_lib.split_of(source.source_id)].append(source)
        by_split = {name: items for name, items in by_split.items() if items}
        self._beam_splits = tuple(by_split)
        outcomes = self._beam_outcomes_dir()
        return {
            name: ConvertSplit(items, self.encoding, str(outcomes / f"{name}.json"))
            for name, items in by_split.items()
        }

    def _convert_all(self, sources: list[SourceFile]) -> list:
        bar = tqdm(total=len(sources), desc="converting", unit="file", disable=not self.show_progress)
        results = []
        if self.workers == 1 and self.file_timeout_s is None:
            for source in sources:
                results += convert_lib.convert(source, self.encoding)
                bar.update()
        else:
            # spawn, not fork: the caller may have JAX (and its threads) loaded. pebble's pool can stop one
            # task past its time limit (replacing its worker), which concurrent.futures' cannot.
            context = multiprocessing.get_context("spawn")
            limit = self.file_timeout_s
            pool = pebble.ProcessPool(self.workers, context=context)
            try:
                futures = {
                    pool.schedule(convert_lib.convert, (s, self.encoding), timeout=limit): s for s in sources
                }
                for future in concurrent.futures.as_completed(futures):
                    results += _result_or_skip(future, futures[future], limit)
                    bar.update()
                pool.close()
            except BaseException:
                # Ctrl-C or a failure: end the workers now, not after every file already scheduled.
                pool.stop()
                raise
            finally:
                pool.join()
        bar.close()
        return sorted(results, key=lambda r: r.source)

    def _generate_examples(self, items: list) -> Iterator[tuple[str, dict]]:
        for ex in items:
            yield ex.source, ex.features()


def _result_or_skip(future: concurrent.futures.Future, source: SourceFile, limit: float | None) -> list:
    """A worker's results, or the file skipped with the reason its worker gave none: past the time limit,
    or the worker process died (killed for memory, crashed in a parser) -- one file never stops a build."""
    try:
        return future.result()
    except concurrent.futures.TimeoutError:
        why = f"conversion took over {limit:g} s (prepare --file-timeout)"
        return [convert_lib.Skipped(source.source_id, "timeout", why)]
    except pebble.ProcessExpired as err:
        why = (
            f"the conversion process died (exit status {err.exitcode}: killed for memory, or a parser crash)"
        )
        return [convert_lib.Skipped(source.source_id, "crashed", why)]


def spread_subset(items: list, limit: int | None) -> list:
    """`limit` items spread evenly over the (sorted) list, so a small subset still spans all composers."""
    if not limit or limit >= len(items):
        return items
    return [items[i * len(items) // limit] for i in range(limit)]


def _assign_splits(examples: list, encoding: EncodingConfig) -> tuple[dict[str, list], list[dict[str, str]]]:
    """A corpus's own splits as they are; else hash splits of works, with copies and near copies of a piece
    kept on one side (`split_groups.py`: the pieces moved are the second value), where in a corpus too small
    to fill all three the largest split lends a piece to an empty one."""
    splits: dict[str, list] = {name: [] for name, _ in convert_lib.SPLIT_PERCENT}
    if any(ex.split for ex in examples):
        for ex in examples:
            splits[ex.split].append(ex)
        return splits, []
    assigned, moved = group_splits(
        [ex.source for ex in examples], [ex.ids for ex in examples], Tokenizer(encoding), convert_lib.split_of
    )
    for ex, split in zip(examples, assigned):
        splits[split].append(ex)
    for items in splits.values():
        donor = max(splits, key=lambda s: len(splits[s]))
        if not items and len(splits[donor]) > 1:
            items.append(splits[donor].pop())
    return splits, moved


def _stats(kept: dict[str, list[dict]], skipped: list[dict[str, str]]) -> BuildStats:
    """Statistics from `convert.outcome` records: the kept pieces of each split and the skipped ones."""
    per_composer: dict[str, dict[str, int]] = collections.defaultdict(lambda: {"examples": 0, "tokens": 0})
    for items in kept.values():
        for piece in items:
            per_composer[piece["composer"]]["examples"] += 1
            per_composer[piece["composer"]]["tokens"] += piece["tokens"]
    return BuildStats(
        files_ok=len({piece["source"].split("#")[0] for items in kept.values() for piece in items}),
        skipped=sorted(skipped, key=lambda s: s["source"]),
        examples={name: len(items) for name, items in kept.items()},
        tokens={name: sum(piece["tokens"] for piece in items) for name, items in kept.items()},
        per_composer=dict(sorted(per_composer.items())),
        notes_cut=sum(piece["cut_notes"] for items in kept.values() for piece in items),
        pieces_cut=sum(piece["cut_notes"] > 0 for items in kept.values() for piece in items),
    )


def dataset_dir(data_dir: str | os.PathLike, source: str) -> pathlib.Path | epath.Path:
    """Folder of one builder config (the version folders and the skipped-files report live in it): a
    `pathlib.Path` for a local data dir, an `epath.Path` for a bucket URL (pathlib would mangle it)."""
    root = epath.Path(data_dir) if is_url(data_dir) else pathlib.Path(data_dir)
    return root / "musenet_midi" / source


def make_builder(source: str, data_dir: str | os.PathLike, encoding: EncodingConfig, **kwargs) -> MusenetMidi:
    """The builder of one source; a wrong source or a data dir that is a file is one line, not a traceback."""
    if source not in SOURCES:
        raise unknown_choice("data source", source, SOURCES)
    check_data_dir(data_dir)
    # Pieces are stored plain; anticipation is made per training window (data/pipeline.py).
    return MusenetMidi(config=source, data_dir=str(data_dir), encoding=plain_encoding(encoding), **kwargs)


def check_data_dir(data_dir: str | os.PathLike) -> None:
    """A data dir that is a file is one line, not a traceback."""
    if pathlib.Path(data_dir).exists() and not pathlib.Path(data_dir).is_dir():
        raise UserError(f"data dir {str(data_dir)!r} is a file, not a folder; give a folder for the dataset")


def input_digest(builder: MusenetMidi, sources: list[SourceFile]) -> str:
    """Hash of what a build would read: each file's path and a hash of its content (a file transposed or
    repaired in place, its size unchanged, is new input), so equal digests mean an identical rebuild."""
    if builder.builder_config.name == "music21":
        listing = [s.source_id for s in sources]
    else:
        listing = [
            f"{s.source_id}:{_content_hash(s.path)}" + (f":{s.split}" if s.split else "") for s in sources
        ]
    listing = spread_subset(listing, builder.limit)
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def _content_hash(path: str) -> str | None:
    """SHA-256 of a regular file's bytes; None for one that cannot be read (a broken link, a pipe, no
    permission): the build skips it with a reason, and its becoming readable is a change."""
    file = pathlib.Path(path)
    try:
        if not file.is_file():
            return None
        with file.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def read_skipped_report(data_dir: str | os.PathLike, source: str) -> list[dict[str, str]]:
    path = dataset_dir(data_dir, source) / SKIPPED_REPORT
    return json.loads(path.read_text())["skipped"] if path.exists() else []


def check_encoding(metadata: dict, encoding: EncodingConfig, where: str) -> None:
    """Refuses a dataset whose tokens were made with another vocabulary, saying what differs and what works.
    Its cut (`max_seconds`, recorded in the metadata) may differ from the config's: it decided which notes
    went in, not what a token means, and a run resumed with its old config (cut at 240 s) must still read
    a dataset of whole pieces."""
    expected = vocabulary(plain_encoding(encoding)).fingerprint()
    found = metadata.get("vocab_fingerprint")
    if found == expected:
        return
    theirs = metadata.get("encoding", {})
    mine = dataclasses.asdict(plain_encoding(encoding))  # datasets are stored plain (make_builder)
    other_keys = [k for k in theirs if k not in ("composers", "max_seconds") and theirs[k] != mine.get(k)]
    extra = [c for c in theirs.get("composers", ()) if c not in encoding.composers]
    if extra and not other_keys:  # e.g. the user's own composer folders, unknown to a trained model
        raise UserError(
            f"{where} has composer labels the model (or config) lacks: {', '.join(extra)}; a trained "
            "model's vocabulary is fixed: prepare the folder into another --data-dir with "
            "`--config MODEL/config.json` (the run's work dir or the bundle; no --config for the bundled "
            "model) and composer sub-folders among its labels (`musenet-jax generate --list-composers`; "
            "files directly in the folder are `unknown`), or fine-tune a new run on this dataset "
            "(`musenet-jax train --init-from`)"
        )
    differs = ", ".join(f"encoding.{k}" for k in other_keys) or "encoding.composers (their order)"
    raise UserError(
        f"{where} was encoded with vocabulary {str(found)[:12]}, but this config's encoding gives "
        f"{expected[:12]} ({differs} differ); prepare it into another --data-dir with this encoding "
        "(`--config` the run's config.json), or for a new run use the encoding the dataset was prepared with"
    )
