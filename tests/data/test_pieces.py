"""data/pieces.py: whole tokenized pieces of a prepared split (the session's real music21 dataset), in the
dataset's order, with `limit`, and one-line errors for a missing dataset or split."""

import numpy as np
import pytest

from musenet_jax.config import load_config
from musenet_jax.data.pieces import load_split_pieces
from musenet_jax.data.pipeline import open_split
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.errors import UserError


@pytest.fixture(scope="module")
def cfg(music21_data_dir):
    return load_config("tiny").with_data_dir(music21_data_dir)


def test_pieces_are_the_splits_ids_in_order(cfg):
    pieces = load_split_pieces(cfg.data, cfg.encoding, "train")
    source = open_split(cfg.data, cfg.encoding, "train")
    assert len(pieces) == len(source) > 0
    for i, ids in enumerate(pieces):
        assert ids.dtype == np.int32 and ids.ndim == 1
        np.testing.assert_array_equal(ids, np.asarray(source[i]["ids"]))
    vocab = Tokenizer(cfg.encoding).vocab.size
    assert all(0 <= p.min() and p.max() < vocab for p in pieces)


def test_limit_takes_the_first_pieces(cfg):
    everything = load_split_pieces(cfg.data, cfg.encoding, "train")
    first = load_split_pieces(cfg.data, cfg.encoding, "train", limit=2)
    assert len(first) == 2
    for a, b in zip(first, everything[:2]):
        np.testing.assert_array_equal(a, b)
    assert len(load_split_pieces(cfg.data, cfg.encoding, "train", limit=10_000)) == len(everything)


def test_missing_dataset_and_split_are_one_line(cfg, tmp_path):
    with pytest.raises(UserError, match="no prepared"):
        load_split_pieces(cfg.with_data_dir(tmp_path).data, cfg.encoding, "train")
    with pytest.raises(UserError, match="no split 'nope'"):
        load_split_pieces(cfg.data, cfg.encoding, "nope")
