"""Augmentation: deterministic given a seed, drums untouched, out-of-range notes folded by octaves."""

import numpy as np
from midi_corpus import packaged_midi_files

from musenet_jax.encoding import augment
from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.encoding.events import Events
from musenet_jax.encoding.families import DRUMS
from musenet_jax.encoding.tokenizer import Tokenizer


def events_with_drums():
    return Events.from_columns(
        [0.0, 0.0, 0.5, 1.0], [0.5, 0.1, 1.0, 1.5], [0, DRUMS, 1, 0], [60, 36, 120, 2], [80, 100, 60, 40]
    )


def test_transpose_leaves_drums_and_folds_out_of_range():
    cfg = EncodingConfig()
    moved = augment.transpose(events_with_drums(), 10, cfg)
    assert len(moved) == 4
    assert list(moved.pitch) == [70, 36, 118, 12]  # 120 + 10 -> 130 -> folded to 118; drums stay at 36
    down = augment.transpose(events_with_drums(), -5, cfg)
    assert list(down.pitch) == [55, 36, 115, 9]  # 2 - 5 = -3 -> folded up to 9


def test_scale_and_stretch():
    events = events_with_drums()
    louder = augment.scale_velocity(events, 1.5)
    assert list(louder.velocity) == [120, 127, 90, 60]
    slower = augment.stretch_time(events, 2.0)
    np.testing.assert_allclose(slower.start_s, events.start_s * 2)


def test_augment_ids_is_deterministic_given_a_seed():
    tokenizer = Tokenizer()
    ids = tokenizer.encode(packaged_midi_files()[2], composer="mozart")
    cfg = augment.AugmentRanges(transpose_semitones=5, velocity_scale=0.2, time_stretch=0.1)
    a = augment.augment_ids(tokenizer, ids, np.random.default_rng(7), cfg)
    b = augment.augment_ids(tokenizer, ids, np.random.default_rng(7), cfg)
    c = augment.augment_ids(tokenizer, ids, np.random.default_rng(8), cfg)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert tokenizer.composer_of(a) == "mozart"
    assert len(tokenizer.ids_to_events(a)) == len(tokenizer.ids_to_events(ids))


def test_no_augmentation_is_identity():
    tokenizer = Tokenizer()
    ids = tokenizer.encode(packaged_midi_files()[2])
    cfg = augment.AugmentRanges(transpose_semitones=0, velocity_scale=0.0, time_stretch=0.0)
    np.testing.assert_array_equal(augment.augment_ids(tokenizer, ids, np.random.default_rng(0), cfg), ids)
