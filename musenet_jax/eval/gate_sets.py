"""Token sequences through the gate: the reference split's openings, the model's samples and, with
controls, real held-out pieces and the controls made from them (`eval`'s "gate" and "controls" sections)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from musenet_jax.encoding.events import Events
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.encoding.vocab import KIND_INSTRUMENT, UNKNOWN_COMPOSER
from musenet_jax.eval.gates import control_reports, gate_piece_stats, gate_report, gate_summary, gate_table
from musenet_jax.eval.music_stats import opening


def requested_families(tokenizer: Tokenizer, ids: np.ndarray) -> list[int]:
    """The instrument families a sequence's conditioning prefix asks for."""
    prefix = np.asarray(ids[: tokenizer.prefix_length(ids)], np.int64)
    vocab = tokenizer.vocab
    return (prefix[vocab.token_kinds[prefix] == KIND_INSTRUMENT] - vocab.instrument_base).tolist()


def composer_label(tokenizer: Tokenizer, ids: np.ndarray) -> str:
    return tokenizer.composer_of(ids) or UNKNOWN_COMPOSER


def openings(tokenizer: Tokenizer, pieces: Sequence[np.ndarray], seconds: float) -> list[Events]:
    """Each piece's first `seconds`, as the samples of that length are compared with."""
    return [opening(tokenizer.ids_to_events(p), seconds) for p in pieces]


def gate_section(
    tokenizer: Tokenizer,
    reference: Sequence[np.ndarray],
    seconds: float,
    *,
    samples: Sequence[np.ndarray] | None = None,
    heldout: Sequence[np.ndarray] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """{"reference": summary, "samples": gate report or None, "controls": {set: gate report} or None}.
    `reference`: the split's pieces (cut to `seconds`); `samples`: the model's, whole; `heldout`: real pieces
    of another split, the noise floor and the material of the controls (cut to `seconds`)."""
    step_s = tokenizer.step_s
    ref_composers = [composer_label(tokenizer, p) for p in reference]
    ref_stats = [
        gate_piece_stats(e, step_s, requested_families(tokenizer, p))
        for e, p in zip(openings(tokenizer, reference, seconds), reference)
    ]
    out: dict[str, Any] = {
        "reference": gate_summary(gate_table(ref_stats)),
        "samples": None,
        "controls": None,
    }
    if samples:
        stats = [
            gate_piece_stats(tokenizer.ids_to_events(s), step_s, requested_families(tokenizer, s))
            for s in samples
        ]
        composers = [composer_label(tokenizer, s) for s in samples]
        out["samples"] = gate_report(stats, composers, ref_stats, ref_composers)
    if heldout:
        out["controls"] = control_reports(
            openings(tokenizer, heldout, seconds),
            [requested_families(tokenizer, p) for p in heldout],
            [composer_label(tokenizer, p) for p in heldout],
            ref_stats,
            ref_composers,
            step_s,
            seed,
        )
    return out
