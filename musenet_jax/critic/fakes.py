"""Generated pieces on disk: the `fake_K.npy` token files of `critic make-fakes`, or any MIDI files."""

from __future__ import annotations

import os
import pathlib

import numpy as np

from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.errors import UserError


def load_fakes(folder: str | os.PathLike, tokenizer: Tokenizer) -> list[np.ndarray]:
    """Token ids of generated pieces: the `.npy` files of `make-fakes`, else any `.mid` files (encoded)."""
    path = pathlib.Path(folder)
    if not path.is_dir():
        raise UserError(
            f"fakes folder {folder} does not exist; make one with `musenet-jax critic make-fakes`"
        )
    arrays = sorted(path.glob("*.npy"))
    if arrays:
        pieces = [np.load(p).astype(np.int32) for p in arrays]
        bad = [
            p.name
            for p, ids in zip(arrays, pieces)
            if ids.ndim != 1 or ids.min() < 0 or ids.max() >= tokenizer.vocab.size
        ]
        if bad:
            raise UserError(
                f"{path / bad[0]}: not token ids of this vocabulary (size {tokenizer.vocab.size})"
            )
        return pieces
    midis = sorted(path.glob("*.mid")) + sorted(path.glob("*.midi"))
    if not midis:
        raise UserError(f"fakes folder {folder} holds no .npy or .mid files")
    return [tokenizer.encode(p) for p in midis]
