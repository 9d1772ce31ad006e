"""The grain input pipeline: TFDS ArrayRecord source -> shuffle -> augment + crop -> shard -> batch.

Element randomness (augmentation, crop position) is drawn from the element's *global* position in the
shuffled stream, and process p takes positions p, p + P, ...; so P processes together see exactly the
batches one process would, and the iterator state (a position) restores exactly.

With `encoding.anticipation_s` > 0, each training piece becomes a plain, span-infilling or accompaniment
sequence at random (`encoding/anticipation.py`) before it is cropped; control tokens are given, never
predicted, so they are left out of the loss. Datasets are stored plain either way; evaluation windows stay
plain, so validation numbers compare with runs trained without anticipation.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import grain
import jax
import numpy as np

from musenet_jax.data.bucket import local_data_dir
from musenet_jax.data.builder import check_encoding, dataset_dir, make_builder
from musenet_jax.data.config import DataConfig
from musenet_jax.data.on_disk import absent_split_error, missing_dataset_error
from musenet_jax.encoding import fill_in_middle as fim
from musenet_jax.encoding.anticipation import is_control, training_ids
from musenet_jax.encoding.augment import AugmentRanges, augment_ids
from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.encoding.slots import held_before, note_slots
from musenet_jax.encoding.timing import duration_steps, token_times
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.errors import UserError

Batch = dict[str, np.ndarray]
READ_THREADS = 2


def open_split(data: DataConfig, encoding: EncodingConfig, split: str) -> Any:
    """The TFDS data source of one split, after checking it was encoded with `encoding`; a missing
    dataset or an empty split is one line saying what to run."""
    data_dir, source = data.data_dir, data.source
    builder = make_builder(source, local_data_dir(data_dir, source), encoding, show_progress=False)
    metadata = pathlib.Path(builder.data_dir) / "metadata.json"
    if not metadata.exists():
        raise missing_dataset_error(data_dir, source, str(builder.version))
    check_encoding(json.loads(metadata.read_text()), encoding, f"dataset {dataset_dir(data_dir, source)}")
    if split not in builder.info.splits:
        sizes = {name: info.num_examples for name, info in builder.info.splits.items()}
        raise absent_split_error(data_dir, source, split, sizes)
    return builder.as_data_source(split=split)


class CropExample:
    """One piece -> one training row of `context + 1` tokens with the conditioning prefix at its head."""

    def __init__(self, tokenizer: Tokenizer, data_cfg: DataConfig, context: int, augment: bool):
        self.tokenizer, self.context, self.augment = tokenizer, context, augment
        self.slots = note_slots(tokenizer.vocab)
        self.ranges = AugmentRanges(
            data_cfg.transpose_semitones, data_cfg.velocity_scale, data_cfg.time_stretch
        )
        self.opening_share = data_cfg.opening_crop_share if augment else 0.0

    def __call__(self, element: dict[str, Any], rng: np.random.Generator) -> Batch:
        tokenizer, vocab = self.tokenizer, self.tokenizer.vocab
        ids = np.asarray(element["ids"], np.int32)
        row_end = None  # an infilling request's row ends where the request stops
        if self.augment:
            ids = augment_ids(tokenizer, ids, rng, self.ranges)
            if vocab.fills_in_middle and rng.random() < fim.SHARE:
                return self._fim_row(ids, rng)
            if vocab.anticipates:
                ids, row_end = training_ids(tokenizer, ids, rng, spans=not vocab.fills_in_middle)
        times = token_times(ids, vocab)
        n_prefix = min(tokenizer.prefix_length(ids), self.context)
        window = self.context + 1 - n_prefix
        stop = len(ids) if row_end is None else max(row_end, n_prefix)
        latest = max(stop - n_prefix - window, 0)
        if row_end is not None or not latest:
            start = n_prefix + latest
        elif self.opening_share and rng.random() < self.opening_share:  # no draw at 0: old runs replay
            start = n_prefix
        else:
            start = n_prefix + int(rng.integers(0, latest + 1))
        take = np.concatenate([np.arange(n_prefix), np.arange(start, min(start + window, stop))])
        length = len(take)
        row = np.full(self.context + 1, vocab.pad_id, np.int32)
        row_times = np.zeros(self.context + 1, np.int32)
        row[:length], row_times[:length] = ids[take], times[take]
        return {
            "inputs": row[:-1],
            "targets": row[1:],
            "loss_mask": ((np.arange(self.context) < length - 1) & ~is_control(row[1:], vocab)).astype(
                np.float32
            ),
            "times": row_times[:-1],
            "durations": np.int32(max(duration_steps(ids, vocab), 1)),
            "sounding_head": held_before(ids, start, self.slots),  # notes held into the crop
        }

    def _fim_row(self, ids: np.ndarray, rng: np.random.Generator) -> Batch:
        """A span of the piece to fill, the rest of it given (`encoding/fill_in_middle.py`)."""
        tokenizer = self.tokenizer
        events = tokenizer.ids_to_events(ids)
        start, stop = fim.random_span(tokenizer, events, rng)
        seq = fim.fim_sequence(tokenizer, events, start, stop, tokenizer.composer_of(ids))
        row = fim.fim_row(seq, tokenizer, self.context, self.slots)
        return {
            "inputs": row["inputs"],
            "targets": row["targets"],
            "loss_mask": (row["counted"] & ~is_control(row["targets"], tokenizer.vocab)).astype(np.float32),
            "times": row["times"],
            "durations": row["durations"],
            "sounding_head": row["sounding_head"],
        }


def _per_process_batch(batch: int, process_count: int) -> int:
    if batch % process_count:
        raise UserError(f"train.global_batch={batch} is not divisible by the {process_count} processes")
    return batch // process_count


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        return jax.process_index(), jax.process_count()
    return process_index, process_count


def make_train_iterator(
    data: DataConfig,
    tokenizer: Tokenizer,
    context: int,
    global_batch: int,
    *,
    split: str = "train",
    process_index: int | None = None,
    process_count: int | None = None,
    seed: int | None = None,
) -> grain.DatasetIterator:
    """Endless, shuffled anew each epoch, augmented; `get_state()`/`set_state()` restore exactly.
    `global_batch` rows per step over all processes (train.global_batch)."""
    index, count = _process(process_index, process_count)
    seed = data.shuffle_seed if seed is None else seed
    crop = CropExample(tokenizer, data, context, augment=True)
    ds = (
        grain.MapDataset.source(open_split(data, tokenizer.cfg, split))
        .shuffle(seed=seed)
        .repeat()
        .random_map(crop, seed=seed + 1)
    )
    ds = ds[index::count].batch(_per_process_batch(global_batch, count), drop_remainder=True)
    return _iterate(ds, data)


def make_eval_iterator(
    data: DataConfig,
    tokenizer: Tokenizer,
    context: int,
    global_batch: int,
    *,
    split: str = "validation",
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.DatasetIterator:
    """One deterministic pass, no augmentation. Every process yields the same number of batches (rows past
    the end of the split are fully masked), because each batch is a collective step across processes."""
    index, count = _process(process_index, process_count)
    batch = _per_process_batch(global_batch, count)
    crop = CropExample(tokenizer, data, context, augment=False)
    source = open_split(data, tokenizer.cfg, split)
    n = len(source)
    rows_per_process = math.ceil(math.ceil(n / count) / batch) * batch
    empty = _empty_row(context, crop.slots.count)

    def row(position: int) -> Batch:
        if position >= n:
            return empty
        return crop(source[position], np.random.default_rng([data.shuffle_seed, position]))

    ds = grain.MapDataset.range(rows_per_process * count)[index::count].map(row).batch(batch)
    return _iterate(ds, data)


def _empty_row(context: int, slots: int) -> Batch:
    zeros = np.zeros(context, np.int32)
    return {
        "inputs": zeros,
        "targets": zeros,
        "loss_mask": np.zeros(context, np.float32),
        "times": zeros,
        "durations": np.int32(1),
        "sounding_head": np.zeros(slots, np.int32),
    }


def _iterate(ds: grain.MapDataset, data_cfg: DataConfig) -> grain.DatasetIterator:
    it_ds = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=data_cfg.prefetch_buffer)
    )
    if data_cfg.worker_count > 0:
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=data_cfg.worker_count))
    return iter(it_ds)
