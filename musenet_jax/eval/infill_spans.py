"""Does knowing the future help? Bits/token of the notes inside a time span of each piece, scored (a) in
the anticipated sequence of an infilling request (the notes from the span's end on given as controls,
`encoding/anticipation.py`) and (b) left to right in the plain sequence, by the same model.

Both scores cover the same tokens: the note-ons and note-offs of the events that happen inside the span
(on the events' clock, which runs `delta` behind in the anticipated sequence). Waits are left out, since
the controls split them differently in the two sequences. One span per piece, placed at random (seeded)
so that it ends by the piece's last onset; a span without a note is not scored (counted as skipped).

Where the cost or the gain sits: a given note comes into view `delta` before its time, so the span's first
`seconds - delta` seconds are written with no given note in view yet, and only its last `delta` seconds can
use them. Both scores are reported for the two parts too (`by_view`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from musenet_jax.encoding.anticipation import anticipated_ids
from musenet_jax.encoding.timing import token_times
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.encoding.vocab import KIND_NOTE_OFF, KIND_NOTE_ON
from musenet_jax.errors import UserError
from musenet_jax.eval.nll import token_nlls

NO_ANTICIPATION = (
    "this run was trained without anticipation: only the left-to-right score of the spans (b), "
    "no score with the future given (a)"
)


def span_tokens(
    tokenizer: Tokenizer, ids: np.ndarray, start_step: int, stop_step: int, shift: int
) -> np.ndarray:
    """bool [len(ids)]: the event note tokens (not controls) at event time in [start_step, stop_step);
    `shift` is how far the sequence's clock runs ahead of its events (delta when anticipated, else 0)."""
    vocab = tokenizer.vocab
    kinds = vocab.token_kinds[np.asarray(ids)]
    times = token_times(np.asarray(ids), vocab) - shift
    return np.isin(kinds, (KIND_NOTE_ON, KIND_NOTE_OFF)) & (times >= start_step) & (times < stop_step)


def pick_spans(tokenizer: Tokenizer, pieces: Sequence[np.ndarray], seconds: float, seed: int) -> list[int]:
    """The first step of each piece's span, uniform (seeded) over the starts that end it by the last
    onset (at 0 in a piece shorter than the span)."""
    rng = np.random.default_rng(seed)
    step = tokenizer.step_s
    starts = []
    for ids in pieces:
        events = tokenizer.ids_to_events(ids)
        last = float(events.start_s.max()) if len(events) else 0.0
        starts.append(round(rng.uniform(0.0, max(last - seconds, 0.0)) / step))
    return starts


def infill_span_scores(
    model: Any, tokenizer: Tokenizer, pieces: Sequence[np.ndarray], *, seconds: float = 8.0, seed: int = 0
) -> dict[str, Any]:
    """{"span_seconds", "seed", "spans", "skipped", "span_tokens", "future_given_bits_per_token" (None
    without anticipation), "left_to_right_bits_per_token", "note" (a line, or ""); with anticipation also
    "future_given_span_tokens" and "by_view": both scores of the tokens written before any given note is
    in view ("none_in_view") and after ("given_in_view")}."""
    if not seconds > 0:
        raise UserError(f"--infill-spans takes the span's length in seconds (> 0), got {seconds:g}")
    vocab, step = tokenizer.vocab, tokenizer.step_s
    length = max(round(seconds / step), 1)
    anticipates = vocab.anticipates
    plain, anticipated, plain_masks, anticipated_masks, in_view = [], [], [], [], []
    for ids, start in zip(pieces, pick_spans(tokenizer, pieces, seconds, seed)):
        events = tokenizer.ids_to_events(ids)
        composer = tokenizer.composer_of(ids)
        whole = tokenizer.events_to_ids(events, composer)
        mask = span_tokens(tokenizer, whole, start, start + length, 0)
        if not mask.any():
            continue
        plain.append(whole)
        plain_masks.append(mask)
        if anticipates:
            onset = np.rint(events.start_s / step)
            future = onset >= start + length
            given = anticipated_ids(tokenizer, events.select(~future), events.select(future), composer)
            anticipated.append(given)
            shift = vocab.anticipation_steps
            anticipated_masks.append(span_tokens(tokenizer, given, start, start + length, shift))
            seen_from = max(start, start + length - shift)  # the first given note is in view from here
            in_view.append(
                (
                    span_tokens(tokenizer, whole, seen_from, start + length, 0),
                    span_tokens(tokenizer, given, seen_from, start + length, shift),
                )
            )
    if not plain:
        raise UserError(f"no piece has a note inside its {seconds:g}-second span: nothing to score")
    plain_nlls = token_nlls(model, tokenizer, plain)
    report = {
        "span_seconds": seconds,
        "seed": seed,
        "spans": len(plain),
        "skipped": len(pieces) - len(plain),
        "span_tokens": int(sum(m.sum() for m in plain_masks)),
        "left_to_right_bits_per_token": _bits(plain_nlls, plain_masks),
        "future_given_bits_per_token": None,
        "note": NO_ANTICIPATION,
    }
    if anticipates:
        anticipated_nlls = token_nlls(model, tokenizer, anticipated)
        report["future_given_span_tokens"] = int(sum(m.sum() for m in anticipated_masks))
        report["future_given_bits_per_token"] = _bits(anticipated_nlls, anticipated_masks)
        report["by_view"] = _by_view(plain_nlls, anticipated_nlls, plain_masks, anticipated_masks, in_view)
        report["note"] = ""
    return report


def _by_view(
    plain_nlls: list[np.ndarray],
    anticipated_nlls: list[np.ndarray],
    plain_masks: list[np.ndarray],
    anticipated_masks: list[np.ndarray],
    in_view: list[tuple[np.ndarray, np.ndarray]],
) -> dict[str, dict[str, float | int]]:
    """Both scores of the span's tokens written before any given note is in view, and of those after."""
    parts = {}
    for name, seen in (("none_in_view", False), ("given_in_view", True)):
        plain = [m & (v[0] == seen) for m, v in zip(plain_masks, in_view)]
        given = [m & (v[1] == seen) for m, v in zip(anticipated_masks, in_view)]
        parts[name] = {
            "span_tokens": int(sum(m.sum() for m in plain)),
            "left_to_right_bits_per_token": _bits(plain_nlls, plain),
            "future_given_bits_per_token": _bits(anticipated_nlls, given),
        }
    return parts


def _bits(nlls: list[np.ndarray], masks: list[np.ndarray]) -> float:
    nats = sum(float(n[m].sum()) for n, m in zip(nlls, masks))
    return nats / math.log(2) / max(sum(int(m.sum()) for m in masks), 1)


def format_spans(report: dict[str, Any]) -> str:
    """The report as a few lines for the terminal."""
    lines = [
        f"{report['spans']} spans of {report['span_seconds']:g} s (seed {report['seed']}, "
        f"{report['skipped']} pieces without a note in theirs), {report['span_tokens']} note tokens",
        f"  bits/token, left to right (b):    {report['left_to_right_bits_per_token']:.3f}",
    ]
    if report["future_given_bits_per_token"] is not None:
        lines.append(f"  bits/token, future given (a):     {report['future_given_bits_per_token']:.3f}")
        for name, label in (
            ("none_in_view", "no given note in view yet"),
            ("given_in_view", "given notes in view"),
        ):
            part = report["by_view"][name]
            lines.append(
                f"    {label + ':':27s} (b) {part['left_to_right_bits_per_token']:.3f}  "
                f"(a) {part['future_given_bits_per_token']:.3f}  ({part['span_tokens']} tokens)"
            )
    if report["note"]:
        lines.append(report["note"])
    return "\n".join(lines)
