"""`train --init-from`: the parameters a new run starts from, taken from a run, a bundle or the Hub.

The new run must mean the same thing by its arrays and its tokens: another architecture (any model key but
the execution ones: attention backend, block size, dtype, remat, scan) or another encoding (but for the
composer labels, which may grow, and anticipation, whose tokens follow the others: `train/init_from.py`) is
refused in one line naming the difference.
"""

from __future__ import annotations

import os

import jax
from flax import nnx

from musenet_jax.app.run import load_run
from musenet_jax.config import Config
from musenet_jax.train.init_from import InitialParams


def initial_params(source: str | os.PathLike | None, cfg: Config) -> InitialParams:
    """Host copies of the parameters of `source`'s model (any source `--checkpoint` takes), checked to fit a
    run of `cfg` before any data is read."""
    run = load_run(source)
    params = jax.device_get(nnx.to_pure_dict(nnx.state(run.model, nnx.Param)))
    initial = InitialParams(params, run.cfg.model, run.tokenizer.vocab, run.source or run.workdir, run.step)
    initial.check_fits(cfg.model, cfg.encoding)
    return initial
