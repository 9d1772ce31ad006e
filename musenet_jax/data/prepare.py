"""`prepare`: build (or reuse) the `musenet_midi` dataset and summarize what went in and what was skipped."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import io
import json
import pathlib
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable

import tensorflow_datasets as tfds

from musenet_jax.data import builder as builder_lib
from musenet_jax.data.bucket import BUILD_INPUTS, cache_root, upload_dataset
from musenet_jax.data.corpora import CORPORA, corpus_root, list_sources
from musenet_jax.data.labels import labelled_encoding
from musenet_jax.encoding.budget import MAX_DURATION_S, MAX_FILE_BYTES, MAX_NOTES, MAX_SILENCE_S
from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.errors import UserError, unknown_choice
from musenet_jax.locks import FolderLock
from musenet_jax.storage import is_url

LOCK_NAME = "prepare.lock"  # in the data dir: one prepare at a time writes there
STAGING_MARK = ".musenet-prepare-staging"  # inside each staging folder: made by prepare, safe to remove


@dataclasses.dataclass(frozen=True)
class PrepareSummary:
    dataset_dir: str
    reused: bool
    files_ok: int
    skipped_by_reason: dict[str, int]
    examples: dict[str, int]
    tokens: dict[str, int]
    per_composer: dict[str, dict[str, int]]
    wall_s: float
    files_per_s: float
    max_seconds: float | None  # encoding.max_seconds: None keeps pieces whole
    notes_cut: int  # notes the cut removed from the pieces kept (pieces it emptied are skipped: cut_away)
    pieces_cut: int
    # composer labels of the input that `encoding.composers` lacked: the dataset's vocabulary has them too
    new_labels: list[str] = dataclasses.field(default_factory=list)
    license: str = ""  # a standard corpus's license, said with the summary

    def describe(self) -> str:
        reused = " (already prepared from the same input; reused)" if self.reused else ""
        lines = [f"dataset: {self.dataset_dir}{reused}"]
        if self.license:
            lines.append(f"license of the corpus: {self.license}")
        skipped = sum(self.skipped_by_reason.values())
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped_by_reason.items()))
        lines.append(f"files ok: {self.files_ok}; skipped: {skipped}" + (f" ({reasons})" if reasons else ""))
        if self.max_seconds is not None:
            lines.append(
                f"encoding.max_seconds={self.max_seconds:g}: cut {self.notes_cut:,} notes from "
                f"{self.pieces_cut} pieces"
            )
        if self.new_labels:
            lines.append(f"composer labels added to the vocabulary: {', '.join(self.new_labels)}")
        for split in self.examples:
            n, tokens = self.examples[split], self.tokens[split]
            empty = "  (empty: add files to fill it)" if not n else ""
            lines.append(f"  {split:<10} {n:>7} examples {tokens:>11,} tokens{empty}")
        if not self.reused:
            lines.append(f"wall time {self.wall_s:.1f} s, {self.files_per_s:.1f} files/s")
        return "\n".join(lines)


def prepare(
    source: str,
    data_dir: str,
    encoding: EncodingConfig = EncodingConfig(),
    *,
    midi_dir: str | None = None,
    limit: int | None = None,
    workers: int | None = None,
    file_timeout_s: float | None = None,
    show_progress: bool = True,
    beam_options: str | None = None,
    force: bool = False,
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> PrepareSummary:
    """Builds the dataset unless one built from the same input with the same encoding and options is
    already there (`force` rebuilds anyway). The input is compared by content: a hash of every file.

    The build goes to a folder beside the dataset and replaces it only once complete, so a failed or
    interrupted rebuild (a full disk included: one line naming the data dir) leaves the previous dataset
    (and its record of inputs) exactly as it was. One `prepare` at a time per data dir: it holds
    `DATA_DIR/prepare.lock` (a second one is refused, naming the holder) and, holding it, removes the
    staging folders a killed `prepare` left there. A bucket `data_dir` (gs://) gets a dataset built in a
    local folder and then uploaded (`bucket.py`).
    `beam_options` (Beam pipeline flags, e.g. "--runner=DataflowRunner --project=P ...") runs the
    conversion as an Apache Beam pipeline instead of local worker processes. `file_timeout_s` skips (and
    reports) an input file whose conversion takes longer: one pathological score cannot hold up a corpus.
    The input's composer labels that `encoding.composers` lacks are added to the dataset's vocabulary
    (`data/labels.py`). For a standard corpus (`maestro_v3`, `lakh_full`) `midi_dir` is the manual dir
    holding its archive or the archive extracted; without one it is downloaded (`corpora.py`)."""
    if source not in builder_lib.SOURCES:
        raise unknown_choice("data source", source, builder_lib.SOURCES)
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be 1 or more (conversion processes), got {workers}")
    if source == "midi_dir" and not (midi_dir and pathlib.Path(midi_dir).is_dir()):
        raise UserError(f"--midi-dir {midi_dir!r} is not a folder; give the folder of MIDI files to prepare")
    builder_lib.check_data_dir(data_dir)
    with FolderLock(data_dir, LOCK_NAME, "prepare", "data dir", say=say):
        if not is_url(data_dir):
            _remove_stale_staging(pathlib.Path(data_dir), say)
        return _build_or_reuse(
            source,
            data_dir,
            encoding,
            midi_dir=midi_dir,
            limit=limit,
            workers=workers,
            file_timeout_s=file_timeout_s,
            show_progress=show_progress,
            beam_options=beam_options,
            force=force,
        )


def _build_or_reuse(
    source: str,
    data_dir: str,
    encoding: EncodingConfig,
    *,
    midi_dir: str | None,
    limit: int | None,
    workers: int | None,
    file_timeout_s: float | None,
    show_progress: bool,
    beam_options: str | None,
    force: bool,
) -> PrepareSummary:
    """`prepare`'s work, done holding the data dir's lock."""
    corpus = CORPORA.get(source)
    if corpus is not None:
        downloads = cache_root() / "downloads" if is_url(data_dir) else pathlib.Path(data_dir) / "downloads"
        midi_dir = str(corpus_root(corpus, midi_dir, downloads))
    sources = list_sources(source, midi_dir)
    if source == "midi_dir" and not sources:
        raise UserError(f"no MIDI files (.mid, .midi) found under {midi_dir}; nothing to prepare")
    configured = encoding.composers
    encoding = labelled_encoding(encoding, sources)
    pipeline_options = _beam_pipeline_options(beam_options) if beam_options is not None else None
    probe = builder_lib.make_builder(source, data_dir, encoding, limit=limit, sources=sources)
    folder = builder_lib.dataset_dir(data_dir, source)
    inputs = {
        "digest": builder_lib.input_digest(probe, sources),
        "fingerprint": probe.vocab.fingerprint(),
        "max_seconds": encoding.max_seconds,
        "version": str(probe.version),
        "limit": limit,
        # options that change which files are skipped
        "file_timeout_s": file_timeout_s or None,
        "budget": [MAX_FILE_BYTES, MAX_NOTES, MAX_DURATION_S, MAX_SILENCE_S],
        "splits": "works and copies together",  # a dataset split by file alone is rebuilt
    }
    inputs_file = folder / BUILD_INPUTS
    if not force and inputs_file.exists() and json.loads(inputs_file.read_text()).get("inputs") == inputs:
        return _reused_summary(json.loads(inputs_file.read_text()))
    if not is_url(data_dir):
        pathlib.Path(data_dir).mkdir(parents=True, exist_ok=True)
    beside = None if is_url(data_dir) else data_dir  # renames need one filesystem; a bucket gets an upload
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".musenet_midi-{source}-building-", dir=beside))
    try:
        (staging / STAGING_MARK).write_text("a prepare builds here; removed when it ends\n")
        builder = builder_lib.make_builder(
            source,
            staging,
            encoding,
            limit=limit,
            workers=workers,
            file_timeout_s=file_timeout_s,
            show_progress=show_progress,
            beam=pipeline_options is not None,
            sources=sources,
        )
        summary = _build(builder, midi_dir, pipeline_options, str(folder))
        summary = dataclasses.replace(
            summary,
            new_labels=list(encoding.composers[len(configured) :]),
            license=corpus.license if corpus else "",
        )
        staged = builder_lib.dataset_dir(staging, source)
        record = {"inputs": inputs, "summary": dataclasses.asdict(summary)}
        skipped = {"skipped": builder.stats.skipped}
        (staged / builder_lib.SKIPPED_REPORT).write_text(json.dumps(skipped, indent=1))
        moved = {"moved": builder.stats.moved}
        (staged / builder_lib.MOVED_REPORT).write_text(json.dumps(moved, indent=1))
        (staged / BUILD_INPUTS).write_text(json.dumps(record, indent=1))
        if is_url(data_dir):
            upload_dataset(staged, folder)
        else:
            _swap_in(pathlib.Path(staged), pathlib.Path(folder))
    except (OSError, RuntimeError) as err:
        if not _out_of_space(err):
            raise
        kept = "the previous dataset is kept as it was" if inputs_file.exists() else "nothing was kept"
        raise UserError(
            f"no space to write the dataset in {data_dir} ({_first_line(err)}); {kept}; free some space "
            "there or give another --data-dir, then rerun"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


# What a full disk (or quota, or file size limit) looks like from TFDS and ArrayRecord's writers: OSError
# with its errno, TFDS's own space check (an errno-less IOError), the shard writer's RuntimeError text.
_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NO_SPACE_TEXTS = (
    "No space left on device",
    "Disk quota exceeded",
    "File too large",
    "Not enough disk space",
)


def _out_of_space(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno in _NO_SPACE_ERRNOS:
        return True
    return any(text in str(err) for text in _NO_SPACE_TEXTS)


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]


_STAGING_NAME = re.compile(r"\.musenet_midi-[a-z0-9_]+-building-[A-Za-z0-9_]{8}")


def _remove_stale_staging(data_dir: pathlib.Path, say: Callable[[str], None]) -> None:
    """Removes the staging folders that a killed `prepare` (SIGKILL, a power cut) left in `data_dir`.
    Called holding the data dir's lock, so no live `prepare` builds in them. Only folders `prepare` made
    are touched: the name it gives them and its mark inside (or, from before the mark, nothing but what a
    build puts there)."""
    if not data_dir.is_dir():
        return
    stale = [
        entry
        for entry in sorted(data_dir.iterdir())
        if _STAGING_NAME.fullmatch(entry.name)
        and entry.is_dir()
        and not entry.is_symlink()
        and (
            (entry / STAGING_MARK).is_file()
            or {p.name for p in entry.iterdir()} <= {"musenet_midi", "previous"}
        )
    ]
    for entry in stale:
        shutil.rmtree(entry)
    if stale:
        names = ", ".join(entry.name for entry in stale)
        say(f"removed {len(stale)} unfinished build folder(s) a killed prepare left in {data_dir}: {names}")


def _build(
    builder: builder_lib.MusenetMidi, midi_dir: str | None, pipeline_options, shown_dir: str
) -> PrepareSummary:
    start = time.perf_counter()
    config = tfds.download.DownloadConfig(manual_dir=midi_dir, beam_options=pipeline_options)
    tfds.disable_progress_bar()  # our own bar covers the slow part; TFDS's shard bars are noise
    # TFDS's status lines name the staging folder, not the dataset; the summary says where it went.
    with contextlib.redirect_stdout(io.StringIO()):
        builder.download_and_prepare(download_config=config)
    wall = time.perf_counter() - start
    stats = builder.stats
    files_total = stats.files_ok + len({s["source"].split("#")[0] for s in stats.skipped})
    return PrepareSummary(
        dataset_dir=shown_dir,
        reused=False,
        files_ok=stats.files_ok,
        skipped_by_reason=dict(collections.Counter(s["reason"] for s in stats.skipped)),
        examples=stats.examples,
        tokens=stats.tokens,
        per_composer=stats.per_composer,
        wall_s=wall,
        files_per_s=files_total / wall if wall else 0.0,
        max_seconds=builder.encoding.max_seconds,
        notes_cut=stats.notes_cut,
        pieces_cut=stats.pieces_cut,
    )


def _swap_in(staged: pathlib.Path, folder: pathlib.Path) -> None:
    """Puts the complete new dataset where the old one was: two renames on one filesystem, the old dataset
    moved into the staging folder (deleted with it) only once the new one is whole."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.exists():
        folder.rename(staged.parent / "previous")
    staged.rename(folder)


def _beam_pipeline_options(flags: str):
    try:
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError:
        raise UserError("--beam-options needs Apache Beam: pip install 'musenet-jax[beam]'") from None
    return PipelineOptions(shlex.split(flags))


def _reused_summary(saved: dict) -> PrepareSummary:
    summary = dict(saved["summary"], reused=True)
    return PrepareSummary(**summary)
