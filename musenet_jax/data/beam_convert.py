"""The conversion as an Apache Beam transform, for corpora too large for one machine (Lakh, MAESTRO scale).

TFDS writes each split's ArrayRecord shards from the PCollection its `ConvertSplit` returns. The transform
also writes the split's per-file outcomes (kept pieces with their token counts, skipped files with their
reason) as one JSON list, so that `prepare` prints the same summary and skipped-file report as an
in-process build. Workers must see the input files and the data dir at the same paths (a shared filesystem).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import apache_beam as beam
from etils import epath

from musenet_jax.data import convert as convert_lib
from musenet_jax.data.source_files import SourceFile
from musenet_jax.encoding.config import EncodingConfig


class ConvertSplit(beam.PTransform):
    """Source files -> (key, features) of every piece kept; outcomes to `outcomes_path` as a side effect."""

    def __init__(self, sources: list[SourceFile], encoding: EncodingConfig, outcomes_path: str):
        super().__init__()
        self.sources, self.encoding, self.outcomes_path = sources, encoding, outcomes_path

    def expand(self, root: beam.pvalue.PBegin) -> beam.PCollection:
        results = (
            root
            | "ListFiles" >> beam.Create(self.sources)
            | "Spread" >> beam.Reshuffle()  # so that workers other than the one holding the list convert
            | "Convert" >> beam.FlatMap(convert_lib.convert, self.encoding)
        )
        _ = (
            results
            | "Outcomes" >> beam.Map(convert_lib.outcome)
            | "Gather" >> beam.combiners.ToList()
            | "WriteOutcomes" >> beam.Map(_write_json, self.outcomes_path)
        )
        return results | "KeepExamples" >> beam.FlatMap(_keyed_features)


def _keyed_features(result: convert_lib.Example | convert_lib.Skipped) -> Iterator[tuple[str, dict]]:
    if isinstance(result, convert_lib.Example):
        yield result.source, result.features()


def _write_json(records: list[dict], path: str) -> None:
    target = epath.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(records))


def read_outcomes(folder: epath.Path, splits: tuple[str, ...]) -> tuple[dict[str, list[dict]], list[dict]]:
    """The kept pieces of each split and all skipped files, from the files `ConvertSplit` wrote
    (then removed)."""
    kept, skipped = {}, []
    for split in splits:
        records = json.loads((folder / f"{split}.json").read_text())
        kept[split] = [r for r in records if "reason" not in r]
        skipped += [r for r in records if "reason" in r]
    folder.rmtree()
    return kept, skipped
