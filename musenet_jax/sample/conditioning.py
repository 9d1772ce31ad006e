"""What a piece is asked to be: composer and instruments (the prefix), an optional intro, a length.

A `Request` is the token prompt the sampler continues: `composer, instruments..., start`, then the
intro's events (its `end` dropped). The instrument set is the requested families plus those the intro
plays (the model saw prefixes listing every family present).

Two lengths, in time steps: where sampling stops (`target_steps`: the intro's duration plus the requested
seconds) and how long the piece is meant to be (`piece_steps`, at least that), which feeds the piece-position
and countdown embeddings. They differ when the samples are the opening of a longer piece: a sample that
believes its piece ends within seconds writes an ending (notes held to the close) from its first note,
which is what evaluation's 5-second samples did when the two were one number (docs/quality.md).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from musenet_jax.encoding.families import FAMILIES
from musenet_jax.encoding.timing import duration_steps
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.encoding.vocab import KIND_INSTRUMENT
from musenet_jax.errors import UserError, unknown_choice


@dataclasses.dataclass(frozen=True)
class Request:
    """One prompt to continue: tokens, how many of them are the prefix, and the target length."""

    prompt: np.ndarray  # int32: prefix + intro events
    prefix_length: int
    target_steps: int  # where sampling stops, intro included
    piece_steps: int  # the piece's whole length for the countdown embedding (>= target_steps)
    families: np.ndarray  # bool [len(FAMILIES)]: instruments the continuation may play
    may_end: bool = True  # False: no `end` token (the co-composer's continuations: the user ends a piece)
    # Given tokens (anticipation: controls, and note-offs of given notes) the sampler writes itself, each
    # when its clock reaches `forced_at` (ascending, none before the prompt's end); sample/infill.py.
    forced: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int32))
    forced_at: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int32))
    # bool [len(FAMILIES)]: families the user asked for, which may rest only so long in the new music
    # (grammar rule 12). None: no family is owed.
    owed: np.ndarray | None = None
    # int32 [len(prompt)]: the model's timing input for the prompt where its clock is not the waits' sum
    # (a fill-in-the-middle prompt, `encoding/fill_in_middle.py`); None: `token_times(prompt)`.
    times: np.ndarray | None = None


def parse_instruments(text: str | Sequence[str]) -> list[str]:
    """'piano,strings' -> ['piano', 'strings']; an unknown name is one line listing the valid ones."""
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if not names:
        raise UserError(f"no instruments given; valid: {', '.join(FAMILIES)}")
    for name in names:
        if name not in FAMILIES:
            raise unknown_choice("instrument", name, FAMILIES)
    return names


def seconds_to_steps(seconds: float, tokenizer: Tokenizer) -> int:
    if seconds <= 0:
        raise UserError(f"--seconds must be positive, got {seconds}")
    return max(1, round(seconds * 1000 / tokenizer.cfg.time_step_ms))


def intro_events(tokenizer: Tokenizer, path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(event tokens without prefix and `end`, family indices it plays) of a MIDI intro."""
    ids = tokenizer.encode(path)
    n_prefix = tokenizer.prefix_length(ids)
    body = ids[n_prefix:]
    if len(body) and body[-1] == tokenizer.vocab.end_id:
        body = body[:-1]
    if not len(body):
        raise UserError(f"{path}: the prompt has no notes to continue")
    vocab = tokenizer.vocab
    families = ids[:n_prefix][vocab.token_kinds[ids[:n_prefix]] == KIND_INSTRUMENT] - vocab.instrument_base
    return body.astype(np.int32), families.astype(np.int64)


def make_request(
    tokenizer: Tokenizer,
    composer: str,
    instruments: str | Sequence[str],
    seconds: float,
    intro: str | os.PathLike | None = None,
    *,
    restrict: bool = True,
    piece_seconds: float = 0.0,
) -> Request:
    """The prompt for `musenet-jax generate`: `seconds` of music after the optional intro; `restrict`
    keeps the continuation to the prefix's instruments. `piece_seconds` (0: the piece ends where
    sampling stops) makes the result the opening of a piece that long, for continuing it later."""
    vocab = tokenizer.vocab
    vocab.composer_id(composer)  # an unknown composer is a one-line error listing the valid ones
    families = np.array([FAMILIES.index(n) for n in parse_instruments(instruments)], np.int64)
    body = np.zeros(0, np.int32)
    if intro is not None:
        body, intro_families = intro_events(tokenizer, intro)
        families = np.union1d(families, intro_families)
    prefix = tokenizer.prefix(composer, families)
    allowed = np.full(len(FAMILIES), not restrict)
    allowed[families] = True
    target = duration_steps(body, vocab) + seconds_to_steps(seconds, tokenizer)
    piece = max(target, round(piece_seconds * 1000 / tokenizer.cfg.time_step_ms))
    owed = np.zeros(len(FAMILIES), bool)
    owed[[FAMILIES.index(n) for n in parse_instruments(instruments)]] = True
    return Request(
        np.concatenate([prefix, body]).astype(np.int32), len(prefix), target, piece, allowed, owed=owed
    )


def request_like(tokenizer: Tokenizer, piece: np.ndarray, max_seconds: float) -> Request:
    """A prompt with a real piece's composer and instruments, stopping at its length or `max_seconds`,
    whichever comes first, and meant as long as the piece: the model's own samples under the conditions
    of the data (the opening of a piece of that length), for the critic and for evaluation."""
    n_prefix = tokenizer.prefix_length(piece)
    prefix = np.asarray(piece[:n_prefix], np.int32)
    vocab = tokenizer.vocab
    families = prefix[vocab.token_kinds[prefix] == KIND_INSTRUMENT] - vocab.instrument_base
    allowed = np.zeros(len(FAMILIES), bool)
    allowed[families] = True
    whole = max(duration_steps(piece, vocab), 1)
    target = min(whole, seconds_to_steps(max_seconds, tokenizer))
    return Request(prefix, n_prefix, target, whole, allowed)
