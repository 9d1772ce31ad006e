"""The grain pipeline: batch format, prefix kept, determinism, exact restore, disjoint process shards."""

import dataclasses
import json

import numpy as np
import pytest

from musenet_jax.config import load_config
from musenet_jax.data.pipeline import CropExample, make_eval_iterator, make_train_iterator, open_split
from musenet_jax.encoding.anticipation import is_control, training_ids
from musenet_jax.encoding.augment import augment_ids
from musenet_jax.encoding.timing import duration_steps
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.encoding.vocab import KIND_COMPOSER


@pytest.fixture(scope="module")
def cfg(music21_data_dir):
    return load_config(
        "tiny", [f"data.data_dir={music21_data_dir}", "train.global_batch=4", "model.context=64"]
    )


def rows(cfg):
    """The iterators' arguments for a run of `cfg`."""
    return cfg.data, Tokenizer(cfg.encoding), cfg.model.context, cfg.train.global_batch


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_batch_format_and_prefix(cfg):
    batch = next(make_train_iterator(*rows(cfg), process_index=0, process_count=1))
    assert batch["inputs"].shape == (4, 64) and batch["durations"].shape == (4,)
    np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
    kinds = Tokenizer().vocab.token_kinds
    assert np.all(kinds[batch["inputs"][:, 0]] == KIND_COMPOSER)
    assert np.all(np.diff(batch["times"], axis=1)[batch["loss_mask"][:, 1:] > 0] >= 0)


def test_same_seed_same_batches_and_other_seed_differs(cfg):
    a = take(make_train_iterator(*rows(cfg), process_index=0, process_count=1), 3)
    b = take(make_train_iterator(*rows(cfg), process_index=0, process_count=1), 3)
    c = take(make_train_iterator(*rows(cfg), process_index=0, process_count=1, seed=5), 3)
    for x, y in zip(a, b):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert not all(np.array_equal(x["inputs"], z["inputs"]) for x, z in zip(a, c))


def test_restore_mid_epoch_gives_the_following_batches(cfg):
    it = make_train_iterator(*rows(cfg), process_index=0, process_count=1)
    take(it, 5)  # past one epoch of this small split, so per-epoch reshuffling is exercised too
    state = it.get_state()
    expected = take(it, 3)
    resumed = make_train_iterator(*rows(cfg), process_index=0, process_count=1)
    resumed.set_state(state)
    for x, y in zip(expected, take(resumed, 3)):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


@pytest.mark.parametrize("processes", [2, 4])
def test_process_shards_are_disjoint_and_cover_the_split(cfg, processes):
    n = len(open_split(cfg.data, cfg.encoding, "train"))
    single = [
        row
        for b in take(make_train_iterator(*rows(cfg), process_index=0, process_count=1), n // 4)
        for row in b["inputs"]
    ]
    shards = [
        [
            row
            for b in take(make_train_iterator(*rows(cfg), process_index=p, process_count=processes), n // 4)
            for row in b["inputs"]
        ]
        for p in range(processes)
    ]
    # process p holds global positions p, p + P, ...: together exactly the single-process stream
    interleaved = [shards[i % processes][i // processes] for i in range(len(single))]
    for a, b in zip(single, interleaved):
        np.testing.assert_array_equal(a, b)
    keys = [{row.tobytes() for row in shard} for shard in shards]
    assert all(not (keys[i] & keys[j]) for i in range(processes) for j in range(i + 1, processes))


def test_eval_iterator_is_finite_and_padded(cfg):
    batches = list(make_eval_iterator(*rows(cfg), split="test", process_index=0, process_count=1))
    n = len(open_split(cfg.data, cfg.encoding, "test"))
    assert len(batches) == -(-n // 4)  # one process: ceil(n / batch)
    assert int((batches[-1]["loss_mask"].sum(1) > 0).sum()) == n - 4 * (len(batches) - 1)


def test_eval_batches_match_across_processes(cfg):
    """Each eval batch is a collective step: every process must yield as many batches, covering the
    split once."""
    shards = [
        list(make_eval_iterator(*rows(cfg), split="validation", process_index=p, process_count=2))
        for p in range(2)
    ]
    assert len({len(s) for s in shards}) == 1
    real_rows = sum(int((b["loss_mask"].sum(1) > 0).sum()) for s in shards for b in s)
    assert real_rows == len(open_split(cfg.data, cfg.encoding, "validation"))


@pytest.mark.slow  # compiles the tiny train step
def test_bench_data_reports_both_rates_and_their_ratio(music21_data_dir, capsys):
    from musenet_jax.cli.main import main

    args = [
        "bench",
        "data",
        "--config",
        "tiny",
        "--set",
        "model.context=64",
        "--set",
        "train.global_batch=8",
        "--data-dir",
        str(music21_data_dir),
        "--batches",
        "2",
        "--steps",
        "1",
        "--rounds",
        "1",
        "--json",
    ]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pipeline_tokens_per_s"] > 0 and report["train_tokens_per_s"] > 0
    assert report["ratio"] == report["pipeline_tokens_per_s"] / report["train_tokens_per_s"]


def test_anticipation_reads_the_plain_dataset_and_masks_controls(cfg):
    """With the switch on, the same (plain) dataset is read; windows mix plain and anticipated sequences,
    the flag stays in the prefix, and control tokens are never targets of the loss."""
    on = cfg.replace(encoding=dataclasses.replace(cfg.encoding, anticipation_s=1.0))
    vocab = Tokenizer(on.encoding).vocab
    batches = take(make_train_iterator(*rows(on), process_index=0, process_count=1), 6)
    inputs = np.concatenate([b["inputs"] for b in batches])
    targets = np.concatenate([b["targets"] for b in batches])
    mask = np.concatenate([b["loss_mask"] for b in batches])
    flagged = np.any(inputs == vocab.anticipate_id, axis=1)
    assert 0 < flagged.sum() < len(inputs)
    assert np.all(np.flatnonzero(inputs[flagged][0] == vocab.anticipate_id) < 2 + len(vocab.families))
    controls = is_control(targets, vocab)
    assert controls.any() and not np.any(mask[controls])
    assert np.all(mask[~controls & (targets != vocab.pad_id)] == 1)


def test_an_infilling_request_row_ends_where_the_request_does(cfg):
    """A request's point is its end (the events meeting the given notes), so its row is the window that
    ends where a request stops, never one that misses the boundary; its countdown is the whole piece's."""
    on = cfg.replace(encoding=dataclasses.replace(cfg.encoding, anticipation_s=1.0))
    tokenizer = Tokenizer(on.encoding)
    crop = CropExample(tokenizer, on.data, on.model.context, augment=True)
    element = open_split(on.data, on.encoding, "train")[0]
    requests = 0
    for seed in range(40):
        row = crop(element, np.random.default_rng(seed))
        replay = np.random.default_rng(seed)  # the crop's own draws, in its order
        ids = augment_ids(tokenizer, np.asarray(element["ids"], np.int32), replay, crop.ranges)
        ids, row_end = training_ids(tokenizer, ids, replay)
        if row_end is not None:
            requests += 1
            tokens = np.append(row["inputs"], row["targets"][-1:])
            tokens = tokens[tokens != tokenizer.vocab.pad_id]
            np.testing.assert_array_equal(tokens[-20:], ids[row_end - 20 : row_end])
            assert row["durations"] == duration_steps(ids, tokenizer.vocab)
    assert requests


def test_opening_crops_start_a_share_of_rows_at_the_pieces_head(cfg):
    """Sampling starts every piece at its head, which a crop placed uniformly in a long piece rarely does:
    `data.opening_crop_share` of the rows start there, the others anywhere as before."""
    tokenizer = Tokenizer(cfg.encoding)
    plain = dataclasses.replace(cfg.data, transpose_semitones=0, velocity_scale=0.0, time_stretch=0.0)
    element = max(open_split(cfg.data, cfg.encoding, "train"), key=lambda e: len(e["ids"]))
    head = np.asarray(element["ids"])[: cfg.model.context]
    assert len(element["ids"]) > 4 * cfg.model.context

    def at_head(share: float, seed: int) -> bool:
        data = dataclasses.replace(plain, opening_crop_share=share)
        row = CropExample(tokenizer, data, cfg.model.context, augment=True)(
            element, np.random.default_rng(seed)
        )
        return bool(np.array_equal(row["inputs"], head))

    assert all(at_head(1.0, seed) for seed in range(10))
    assert not any(at_head(0.0, seed) for seed in range(10))
    assert 8 <= sum(at_head(0.5, seed) for seed in range(40)) <= 32
    with pytest.raises(ValueError, match="opening_crop_share must be in"):
        dataclasses.replace(plain, opening_crop_share=1.5)


def test_fill_in_middle_rows_hold_the_given_rest_first_and_never_score_it(cfg):
    """With `encoding.span_infill=fill_in_middle` half the rows are a span's: the prefix, `fim:suffix`, the
    given rest as controls and waits, `fim:middle`, then the plain stream; only the stream (and the prefix)
    are targets of the loss. The other rows stay plain or anticipated, from the same plain dataset."""
    on = cfg.replace(
        encoding=dataclasses.replace(cfg.encoding, anticipation_s=1.0, span_infill="fill_in_middle"),
        model=dataclasses.replace(cfg.model, context=256),
    )
    vocab = Tokenizer(on.encoding).vocab
    batches = take(make_train_iterator(*rows(on), process_index=0, process_count=1), 8)
    inputs = np.concatenate([b["inputs"] for b in batches])
    mask = np.concatenate([b["loss_mask"] for b in batches])
    times = np.concatenate([b["times"] for b in batches])
    spans = np.flatnonzero(np.any(inputs == vocab.fim_suffix_id, axis=1))
    assert 0 < len(spans) < len(inputs)
    for r in spans:
        suffix_at = int(np.flatnonzero(inputs[r] == vocab.fim_suffix_id)[0])
        middle_at = int(np.flatnonzero(inputs[r] == vocab.fim_middle_id)[0])
        assert suffix_at < 2 + len(vocab.families) and suffix_at < middle_at <= 256 // 4
        # the target at position p is inputs[p + 1]: none from fim:suffix through fim:middle counts
        assert not mask[r, suffix_at - 1 : middle_at].any()
        assert mask[r, middle_at:].any()
        given = inputs[r, suffix_at + 1 : middle_at]
        assert np.all(is_control(given, vocab) | (vocab.wait_steps[given] > 0))
        # the given rest lies after the span's start; the stream's clock starts again below it
        assert times[r, middle_at - 1] >= times[r, suffix_at] and times[r, middle_at] <= times[r, suffix_at]
