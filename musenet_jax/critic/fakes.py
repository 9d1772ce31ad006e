"""`critic make-fakes`: the model's own samples, written as `fake_K.npy` (the exact tokens) and `fake_K.mid`."""

from __future__ import annotations

import os
import pathlib

import numpy as np

from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.errors import UserError


def make_fakes(
    workdir: str | os.PathLike,
    out_dir: str | os.PathLike,
    num: int | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    split: str = "train",
    seed: int = 0,
    show_progress: bool = True,
) -> int:
    """Samples `num` pieces conditioned like pieces of `split` (composer, instruments, length); returns the count."""
    from tqdm import tqdm

    from musenet_jax.eval.pieces import load_split_pieces
    from musenet_jax.sample.filtering import SamplingSettings
    from musenet_jax.sample.like_data import sample_like_pieces
    from musenet_jax.sample.sampler import Sampler
    from musenet_jax.train.checkpoint import restore_for_inference

    cfg, model, tokenizer = restore_for_inference(workdir)
    num = cfg.sample.critic_fakes if num is None else num
    if num < 1:
        raise UserError(f"--num must be at least 1, got {num}")
    pieces = load_split_pieces(cfg, data_dir, split)
    sampler = Sampler(model, tokenizer, SamplingSettings.from_config(cfg.sample))
    with tqdm(total=num, unit="piece", desc="fakes", disable=not show_progress) as bar:
        fakes = sample_like_pieces(sampler, pieces, num, max_seconds=cfg.sample.seconds,
                                   max_new_tokens=cfg.sample.max_new_tokens, seed=seed, progress=bar.update)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for k, fake in enumerate(fakes):
        np.save(out / f"fake_{k:05d}.npy", fake.ids)
        tokenizer.decode(fake.ids).dump(str(out / f"fake_{k:05d}.mid"))
    return len(fakes)


def load_fakes(folder: str | os.PathLike, tokenizer: Tokenizer) -> list[np.ndarray]:
    """Token ids of generated pieces: the `.npy` files of `make-fakes`, else any `.mid` files (encoded)."""
    path = pathlib.Path(folder)
    if not path.is_dir():
        raise UserError(f"--fakes {folder}: no such folder; make one with `musenet-jax critic make-fakes`")
    arrays = sorted(path.glob("*.npy"))
    if arrays:
        pieces = [np.load(p).astype(np.int32) for p in arrays]
        bad = [p.name for p, ids in zip(arrays, pieces) if ids.ndim != 1 or ids.min() < 0 or ids.max() >= tokenizer.vocab.size]
        if bad:
            raise UserError(f"{path / bad[0]}: not token ids of this vocabulary (size {tokenizer.vocab.size})")
        return pieces
    midis = sorted(path.glob("*.mid")) + sorted(path.glob("*.midi"))
    if not midis:
        raise UserError(f"--fakes {folder} holds no .npy or .mid files")
    return [tokenizer.encode(p) for p in midis]
