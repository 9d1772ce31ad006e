"""What a data dir holds, so that a missing dataset or split is one line saying what to run instead."""

from __future__ import annotations

import json
import os

from musenet_jax.data.builder import SOURCES, dataset_dir
from musenet_jax.data.convert import SPLIT_PERCENT
from musenet_jax.encoding.config import describe_cut
from musenet_jax.errors import UserError

MIN_PIECES_FOR_ALL_SPLITS = 3  # the builder lends a piece to an empty split from the largest one


def prepared_versions(data_dir: str | os.PathLike, source: str) -> dict[str, dict]:
    """Finished datasets of one source, any builder version: version -> the dataset's metadata."""
    folder = dataset_dir(data_dir, source)
    return {meta.parent.name: json.loads(meta.read_text()) for meta in sorted(folder.glob("*/metadata.json"))}


def _prepare_command(data_dir: str | os.PathLike, source: str) -> str:
    midi_dir = " --midi-dir YOUR_MIDI_FOLDER" if source == "midi_dir" else ""
    return f"musenet-jax prepare --source {source}{midi_dir} --data-dir {data_dir}"


def missing_dataset_error(data_dir: str | os.PathLike, source: str, version: str) -> UserError:
    """No dataset of this version: says whether an older version or another source is there; what to run."""
    older = prepared_versions(data_dir, source)
    if older:
        found, metadata = list(older.items())[-1]
        cut = describe_cut(metadata.get("encoding", {}).get("max_seconds"))
        return UserError(
            f"musenet_midi/{source} under {str(data_dir)!r} is version {found} (pieces {cut}), made by an "
            f"older musenet-jax that this one ({version}) does not read; "
            f"rerun `{_prepare_command(data_dir, source)}`"
        )
    others = [other for other in SOURCES if other != source and prepared_versions(data_dir, other)]
    there = (
        f"; the musenet_midi/{others[0]} dataset there is read with `--set data.source={others[0]}`"
        if others
        else f"; select another source with `--set data.source=NAME` ({', '.join(SOURCES)})"
    )
    return UserError(
        f"no prepared musenet_midi/{source} dataset (data.source={source}) under "
        f"{str(data_dir)!r}; run `{_prepare_command(data_dir, source)}` first{there}"
    )


def absent_split_error(
    data_dir: str | os.PathLike, source: str, split: str, sizes: dict[str, int]
) -> UserError:
    """A split the dataset lacks: an empty one (small corpus) says how to fill it; a misspelt one, all."""
    names = [name for name, _ in SPLIT_PERCENT]
    if split not in names:
        return UserError(f"dataset has no split {split!r}; valid: {', '.join(names)}")
    pieces = ", ".join(f"{name} {n}" for name, n in sizes.items())
    return UserError(
        f"split {split!r} of musenet_midi/{source} under {str(data_dir)!r} is empty (pieces: {pieces}; "
        f"a hash of each file's path picks its split); add MIDI files ({MIN_PIECES_FOR_ALL_SPLITS} usable "
        f"pieces fill every split) and rerun `{_prepare_command(data_dir, source)}`"
    )
