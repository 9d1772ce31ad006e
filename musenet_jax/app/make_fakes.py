"""`critic make-fakes`: the model's own samples, conditioned like real pieces of a split, written as
`fake_K.npy` (the exact tokens) and `fake_K.mid`.

The folder's pieces afterwards are exactly this run's, since `critic train` reads every one there: an
earlier make-fakes' files (listed unchanged in the folder's manifest, `outputs.py`) are replaced or
removed, and a folder holding pieces the tool did not write is refused in one line before sampling."""

from __future__ import annotations

import os
import pathlib
import re

import numpy as np
from tqdm import tqdm

from musenet_jax.app.run import Run
from musenet_jax.data.pieces import load_split_pieces
from musenet_jax.encoding.families import FAMILIES
from musenet_jax.outputs import naming, refuse_to_overwrite, remove_earlier, staged_into
from musenet_jax.sample.budget import token_budget
from musenet_jax.sample.like_data import sample_like_pieces

FAKE_FILE = re.compile(r"^fake_\d+\.(npy|mid)$")
PIECE_SUFFIXES = (".npy", ".mid", ".midi")  # what `critic train --fakes` reads from a folder


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
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    present = sorted(p.name for p in out.iterdir() if p.is_file() and p.suffix in PIECE_SUFFIXES)
    refuse_to_overwrite(out, present, "--out")  # before sampling: only make-fakes' own may be replaced
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
    with staged_into(out, "make-fakes", "--out") as stage, naming(out):
        for k, fake in enumerate(fakes):
            np.save(stage / f"fake_{k:05d}.npy", fake.ids)
            tokenizer.decode(fake.ids).dump(str(stage / f"fake_{k:05d}.mid"))
    names = [f"fake_{k:05d}.{kind}" for k in range(len(fakes)) for kind in ("npy", "mid")]
    remove_earlier(out, "make-fakes", FAKE_FILE, keep=names)
    return len(fakes)
