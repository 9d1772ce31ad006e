"""`critic make-fakes`: the model's own samples, conditioned like real pieces of a split, written as
`fake_K.npy` (the exact tokens) and `fake_K.mid`."""

from __future__ import annotations

import os
import pathlib

import numpy as np
from tqdm import tqdm

from musenet_jax.app.run import Run
from musenet_jax.data.pieces import load_split_pieces
from musenet_jax.encoding.families import FAMILIES
from musenet_jax.sample.budget import token_budget
from musenet_jax.sample.like_data import sample_like_pieces


def make_fakes(
    run: Run,
    out_dir: str | os.PathLike,
    *,
    split: str = "train",
    seed: int = 0,
    show_progress: bool = True,
) -> int:
    """Samples `critic.fakes` pieces conditioned like pieces of `split` (composer, instruments, length,
    capped at `sample.seconds`); returns the count written."""
    cfg, tokenizer = run.cfg, run.tokenizer
    num = cfg.critic.fakes
    pieces = load_split_pieces(cfg.data, cfg.encoding, split)
    sampler = run.sampler()
    budget = token_budget(cfg.sample.seconds, len(FAMILIES), cfg.sample.max_new_tokens)  # any instruments
    with tqdm(total=num, unit="piece", desc="fakes", disable=not show_progress) as bar:
        fakes = sample_like_pieces(
            sampler,
            pieces,
            num,
            max_seconds=cfg.sample.seconds,
            max_new_tokens=budget,
            seed=seed,
            progress=bar.update,
        )
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for k, fake in enumerate(fakes):
        np.save(out / f"fake_{k:05d}.npy", fake.ids)
        tokenizer.decode(fake.ids).dump(str(out / f"fake_{k:05d}.mid"))
    return len(fakes)
