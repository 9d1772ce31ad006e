"""Fine-tuning: a new run starts from another model's parameters (`train --init-from`, `train.init_from`),
a training run's or a bundle's alike (`app/init_from.py` loads them into an `InitialParams`).

The new run's vocabulary may have composer labels the base lacked (its dataset brought them, see
`data/labels.py`). Composer tokens sit before the instrument, wait and note tokens, so a new label moves
every later id: the parameters with a vocabulary axis (the token embedding, the output head's kernel and
bias) are therefore rebuilt row by row by token *name*: each token takes the base's row of the same token,
and a composer the base never saw starts from the base's `composer:unknown` row (what the base does
with a piece by an unnamed composer), to be specialised by the fine-tuning. Anticipation
(`encoding.anticipation_s`) may be turned on for a base trained without it: its tokens only follow all
others (`encoding/vocab.py`), so each control token `ctl:X` starts from the base's row of its note `X` and
the `anticipate` flag from the base's `start` row; the fine-tuning then teaches the sequence format (events
`anticipation_s` behind the clock). Every other parameter is the base's as it is. Only the composers and
anticipation may differ between the two vocabularies, and the two models must have the same architecture
(`ModelConfig.architecture_changes`); the optimizer starts afresh.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.encoding.vocab import (
    KIND_ANTICIPATE,
    KIND_COMPOSER,
    KIND_CONTROL_OFF,
    KIND_CONTROL_ON,
    KIND_FIM_MIDDLE,
    KIND_FIM_SUFFIX,
    UNKNOWN_COMPOSER,
    Vocabulary,
    vocabulary,
)
from musenet_jax.errors import UserError
from musenet_jax.model.config import ModelConfig
from musenet_jax.model.transformer import abstract_params

VOCAB_AXIS = "vocab"


@dataclasses.dataclass(frozen=True)
class InitialParams:
    """Another model's parameters, with what they mean: the one thing the loop fine-tunes from."""

    params: Any  # host arrays of the model's parameter tree (a pure dict)
    model: ModelConfig
    vocab: Vocabulary
    origin: str  # where they came from, as the user named it
    step: int

    def check_fits(self, model: ModelConfig, encoding: EncodingConfig) -> None:
        """Refuses, in one line, a run whose parameters or tokens would mean something else; the composer
        labels (a new one starts from `unknown`) and anticipation (its tokens follow the others) may
        differ."""
        changes = self.model.architecture_changes(model)
        if changes:
            raise UserError(
                f"--init-from {self.origin} is another architecture ({', '.join(changes)}); train with its "
                "model settings (its config.json)"
            )
        base = self.vocab.cfg
        same = dataclasses.replace(
            encoding,
            composers=base.composers,
            anticipation_s=base.anticipation_s,
            span_infill=base.span_infill if base.anticipation_s > 0 else "anticipation",
        )
        mine = vocabulary(same).fingerprint()
        theirs = self.vocab.fingerprint()
        if mine != theirs:
            raise UserError(
                f"--init-from {self.origin} uses another encoding (vocabulary fingerprint {theirs[:12]}..., "
                f"this run's config gives {mine[:12]}...); use its encoding settings (its config.json) for "
                "the new run: only the composer labels, encoding.anticipation_s and encoding.span_infill "
                "may differ"
            )


def vocab_rows(base: Vocabulary, new: Vocabulary) -> np.ndarray:
    """For each id of `new`, the id of the same token in `base` (a new composer: the base's `unknown`; for a
    base without anticipation, a control `ctl:X`: the base's `X`, the `anticipate` flag: its `start`; the
    fill-in-the-middle markers: the base's `anticipate` flag, or its `start` without one)."""
    base_id = {s: i for i, s in enumerate(base.strings)}
    unknown = base.composer_id(UNKNOWN_COMPOSER)
    rows = np.empty(new.size, np.int64)
    for i, token in enumerate(new.strings):
        kind = new.token_kinds[i]
        if token in base_id:
            rows[i] = base_id[token]
        elif kind == KIND_COMPOSER:
            rows[i] = unknown
        elif kind in (KIND_CONTROL_ON, KIND_CONTROL_OFF) and token.removeprefix("ctl:") in base_id:
            rows[i] = base_id[token.removeprefix("ctl:")]
        elif kind == KIND_ANTICIPATE:
            rows[i] = base.start_id
        elif kind in (KIND_FIM_SUFFIX, KIND_FIM_MIDDLE):  # where the given rest and the stream begin
            rows[i] = base.anticipate_id if base.anticipates else base.start_id
        else:
            raise UserError(
                f"--init-from: the base model's vocabulary has no token {token!r}; a fine-tuned run may "
                "add composer labels and anticipation, but its other encoding settings must be the base's"
            )
    return rows


def fine_tune_params(
    initial: InitialParams, model: ModelConfig, vocab: Vocabulary, say: Callable[[str], None] = print
) -> Any:
    """Host arrays of `initial`'s parameters as those of a `model` over `vocab`: rows of the vocabulary
    axes moved to each token's id in `vocab`, new composers on the base's `unknown`."""
    initial.check_fits(model, vocab.cfg)
    rows = vocab_rows(initial.vocab, vocab)
    axes = _vocab_axes(model, vocab)
    added = [c for c in vocab.composers if c not in initial.vocab.composers]
    learns = vocab.anticipates and not initial.vocab.anticipates
    fills = vocab.fills_in_middle and not initial.vocab.fills_in_middle
    say(
        f"fine-tuning from step {initial.step} of {initial.origin}"
        + (f"; new composer labels start from `unknown`: {', '.join(added)}" if added else "")
        + (
            f"; anticipation ({vocab.cfg.anticipation_s:g} s) is new to the base: its control tokens start "
            "from their notes', its flag from `start`"
            if learns
            else ""
        )
        + ("; filling spans in the middle is new to the base: its markers start from its flag" * fills)
    )

    def remap(path: tuple, x: Any) -> Any:
        keys = tuple(str(getattr(k, "key", k)) for k in path)
        return np.take(np.asarray(x), rows, axis=axes[keys]) if keys in axes else x

    return jax.tree_util.tree_map_with_path(remap, initial.params)


def _vocab_axes(model: ModelConfig, vocab: Vocabulary) -> dict[tuple[str, ...], int]:
    """Path (as keys) of every parameter with a vocabulary axis -> that axis."""
    abstract, _ = abstract_params(model, vocab)
    axes = {}
    for path, variable in nnx.to_flat_state(nnx.state(abstract, nnx.Param)):
        names = variable.get_metadata().get("out_sharding") or ()
        if VOCAB_AXIS in names:
            axes[tuple(str(k) for k in path)] = tuple(names).index(VOCAB_AXIS)
    return axes
