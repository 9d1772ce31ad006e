"""`prepare`: build (or reuse) the `musenet_midi` dataset and summarize what went in and what was skipped."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import pathlib
import shlex
import sys
import time

from musenet_jax.data import builder as builder_lib
from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.errors import UserError

BUILD_INPUTS = "build_inputs.json"


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

    def describe(self) -> str:
        lines = [f"dataset: {self.dataset_dir}" + (" (already prepared from the same input; reused)" if self.reused else "")]
        skipped = sum(self.skipped_by_reason.values())
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped_by_reason.items()))
        lines.append(f"files ok: {self.files_ok}; skipped: {skipped}" + (f" ({reasons})" if reasons else ""))
        for split in self.examples:
            lines.append(f"  {split:<10} {self.examples[split]:>7} examples {self.tokens[split]:>11,} tokens")
        if not self.reused:
            lines.append(f"wall time {self.wall_s:.1f} s, {self.files_per_s:.1f} files/s")
        return "\n".join(lines)


def prepare(source: str, data_dir: str, encoding: EncodingConfig = EncodingConfig(), *, midi_dir: str | None = None,
            limit: int | None = None, workers: int | None = None, show_progress: bool = True,
            beam_options: str | None = None) -> PrepareSummary:
    """Builds the dataset unless one built from the same input with the same encoding is already there.

    `beam_options` (Beam pipeline flags, e.g. "--runner=DataflowRunner --project=P ...") runs the
    conversion as an Apache Beam pipeline instead of local worker processes."""
    if source == "midi_dir" and not (midi_dir and pathlib.Path(midi_dir).is_dir()):
        raise UserError(f"--midi-dir {midi_dir!r} is not a folder; give the folder of MIDI files to prepare")
    pipeline_options = _beam_pipeline_options(beam_options) if beam_options is not None else None
    builder = builder_lib.make_builder(source, data_dir, encoding, limit=limit, workers=workers,
                                       show_progress=show_progress, beam=pipeline_options is not None)
    folder = builder_lib.dataset_dir(data_dir, source)
    inputs = {"digest": builder_lib.input_digest(builder, midi_dir), "fingerprint": builder.vocab.fingerprint(),
              "limit": limit}
    inputs_file = folder / BUILD_INPUTS
    if inputs_file.exists() and json.loads(inputs_file.read_text()).get("inputs") == inputs:
        return _reused_summary(folder, json.loads(inputs_file.read_text()))
    start = time.perf_counter()
    import tensorflow_datasets as tfds

    mode = tfds.download.GenerateMode
    config = tfds.download.DownloadConfig(
        manual_dir=midi_dir, beam_options=pipeline_options,
        download_mode=mode.FORCE_REDOWNLOAD if folder.exists() else mode.REUSE_CACHE_IF_EXISTS,
    )
    tfds.disable_progress_bar()  # our own bar covers the slow part; TFDS's shard bars are noise
    with contextlib.redirect_stdout(sys.stderr):  # TFDS prints status lines; stdout is for our summary
        builder.download_and_prepare(download_config=config)
    wall = time.perf_counter() - start
    stats = builder.stats
    files_total = stats.files_ok + len({s["source"].split("#")[0] for s in stats.skipped})
    summary = PrepareSummary(
        dataset_dir=str(folder), reused=False, files_ok=stats.files_ok,
        skipped_by_reason=dict(collections.Counter(s["reason"] for s in stats.skipped)),
        examples=stats.examples, tokens=stats.tokens, per_composer=stats.per_composer,
        wall_s=wall, files_per_s=files_total / wall if wall else 0.0,
    )
    (folder / builder_lib.SKIPPED_REPORT).write_text(json.dumps({"skipped": stats.skipped}, indent=1))
    inputs_file.write_text(json.dumps({"inputs": inputs, "summary": dataclasses.asdict(summary)}, indent=1))
    return summary


def _beam_pipeline_options(flags: str):
    try:
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError:
        raise UserError("--beam-options needs Apache Beam: pip install 'musenet-jax[beam]'") from None
    return PipelineOptions(shlex.split(flags))


def _reused_summary(folder: pathlib.Path, saved: dict) -> PrepareSummary:
    summary = dict(saved["summary"], reused=True)
    return PrepareSummary(**summary)
