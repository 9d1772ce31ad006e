"""Composer labels come from the data: a dataset's vocabulary has a token for every label it carries.

`prepare` lists the input's labels (a MIDI folder's first-level sub-folders, music21's corpus folders as
`corpus.py` maps them, MAESTRO's composers) and encodes with `encoding.composers` followed by the labels
not already in it, sorted. The dataset records that encoding (and its fingerprint) in its metadata;
`train` takes the dataset's composers from there (`with_dataset_labels`), so the run's config, its
checkpoints' fingerprint and `generate --composer` all know them. A corpus whose labels are all in the
configured list (the music21 corpus with the default list) keeps exactly the configured vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Iterable

from musenet_jax.data.bucket import local_data_dir
from musenet_jax.data.builder import make_builder
from musenet_jax.data.config import DataConfig
from musenet_jax.data.source_files import SourceFile
from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.encoding.vocab import UNKNOWN_COMPOSER


def dataset_composers(configured: tuple[str, ...], found: Iterable[str]) -> tuple[str, ...]:
    """The configured composers, then the labels found that are not among them (sorted)."""
    extra = sorted({label for label in found if label not in configured and label != UNKNOWN_COMPOSER})
    return (*configured, *extra)


def labelled_encoding(encoding: EncodingConfig, sources: Iterable[SourceFile]) -> EncodingConfig:
    """`encoding` with the sources' labels added to its composers."""
    composers = dataset_composers(encoding.composers, (s.composer for s in sources))
    return encoding if composers == encoding.composers else dataclasses.replace(encoding, composers=composers)


def recorded_composers(data: DataConfig, encoding: EncodingConfig) -> tuple[str, ...] | None:
    """The composers the prepared dataset of `data` was encoded with; None when there is none yet."""
    data_dir = local_data_dir(data.data_dir, data.source)
    builder = make_builder(data.source, data_dir, encoding, show_progress=False)
    metadata = pathlib.Path(builder.data_dir) / "metadata.json"
    if not metadata.exists():
        return None
    composers = json.loads(metadata.read_text()).get("encoding", {}).get("composers")
    return None if composers is None else tuple(composers)


def with_dataset_labels(
    data: DataConfig, encoding: EncodingConfig, say: Callable[[str], None] = print
) -> EncodingConfig:
    """`encoding` with its composers extended by the labels the dataset of `data` added (said in one line).
    A dataset made with other composers is left as it is, for the encoding check to refuse with what to do."""
    recorded = recorded_composers(data, encoding)
    configured = encoding.composers
    if recorded is None or recorded == configured or recorded[: len(configured)] != configured:
        return encoding
    added = recorded[len(configured) :]
    say(f"composer labels from the dataset: {', '.join(added)} (besides the {len(configured)} configured)")
    return dataclasses.replace(encoding, composers=recorded)
