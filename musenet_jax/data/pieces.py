"""Whole tokenized pieces of one split of the prepared dataset (the critic's real music, eval's test set)."""

from __future__ import annotations

import numpy as np

from musenet_jax.data.config import DataConfig
from musenet_jax.data.pipeline import open_split
from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.errors import UserError


def load_split_pieces(
    data: DataConfig, encoding: EncodingConfig, split: str, limit: int | None = None
) -> list[np.ndarray]:
    """Token ids of the split's pieces in `data.data_dir`, in the dataset's order (`limit` = the first N)."""
    source = open_split(data, encoding, split)
    count = len(source) if limit is None else min(limit, len(source))
    pieces = [np.asarray(source[i]["ids"], np.int32) for i in range(count)]
    if not pieces:
        raise UserError(f"split {split!r} of the dataset in {data.data_dir} has no pieces")
    return pieces
