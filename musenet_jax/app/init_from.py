"""`train --init-from`: the parameters a new run starts from, taken from a run, a bundle or the Hub.

The new run must mean the same thing by its tokens and its arrays: another vocabulary, or another
architecture (any model key but the execution ones: attention backend, block size, dtype, remat, scan),
is refused in one line naming the difference.
"""

from __future__ import annotations

import os
from typing import Any

import jax
from flax import nnx

from musenet_jax.app.run import load_run
from musenet_jax.config import Config
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.errors import UserError
from musenet_jax.model.config import ModelConfig


def architecture_changes(source: Config, target: Config) -> list[str]:
    """`model.KEY a -> b` for every model key that changes what the parameters mean."""
    before, after = source.to_dict()["model"], target.to_dict()["model"]
    return [
        f"model.{key} {before[key]!r} -> {after[key]!r}"
        for key in sorted(after)
        if key not in ModelConfig.EXECUTION_KEYS and before.get(key) != after[key]
    ]


def initial_params(source: str | os.PathLike | None, cfg: Config) -> tuple[dict[str, Any], str]:
    """(host copies of the parameters of `source`'s model, a line saying where they came from), checked
    to fit a run of `cfg`."""
    run = load_run(source)
    given = run.source or run.workdir
    mine = Tokenizer(cfg.encoding).vocab.fingerprint()
    theirs = run.tokenizer.vocab.fingerprint()
    if mine != theirs:
        raise UserError(
            f"--init-from {given} uses another encoding (vocabulary fingerprint {theirs[:12]}..., this run's "
            f"config gives {mine[:12]}...); use its encoding settings (its config.json) for the new run"
        )
    changes = architecture_changes(run.cfg, cfg)
    if changes:
        raise UserError(
            f"--init-from {given} is another architecture ({', '.join(changes)}); train with --config "
            f"{run.cfg.name} or its config.json"
        )
    params = jax.device_get(nnx.to_pure_dict(nnx.state(run.model, nnx.Param)))
    return params, f"starting from the parameters of {given} (step {run.step})"
