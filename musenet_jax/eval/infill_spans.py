"""Does knowing the future help? Bits/token of the notes inside a time span of each piece, scored (a) with
the notes from the span's end on given, as the run's format gives them: in the anticipated sequence of an
infilling request (controls `delta` ahead, `encoding/anticipation.py`) or in the fill-in-the-middle
sequence (the rest of the piece first, `encoding/fill_in_middle.py`); and (b) left to right in the plain
sequence, by the same model, in one window that ends with the span and holds as much of the piece before
it as the context does (a model trained without anticipation gives (b) only).

Both scores cover the same tokens: the note-ons and note-offs of the events that happen inside the span
(on the events' clock, which runs `delta` behind in the anticipated sequence). Waits are left out, since
the controls split them differently in the sequences. One span per piece, placed at random (seeded)
so that it ends by the piece's last onset; a span without a note is not scored (counted as skipped).

Where an anticipated span's cost or gain sits: a given note comes into view `delta` before its time, so the
span's first `seconds - delta` seconds are written with no given note in view yet, and only its last `delta`
seconds can use them. Both scores are reported for the two parts too (`by_view`); a fill-in-the-middle span
has the whole given future in view from its first token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from musenet_jax.encoding import fill_in_middle as fim
from musenet_jax.encoding.anticipation import anticipated_ids
from musenet_jax.encoding.events import Events
from musenet_jax.encoding.slots import NoteSlots, held_before, note_slots
from musenet_jax.encoding.timing import duration_steps, token_times
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.encoding.vocab import KIND_NOTE_OFF, KIND_NOTE_ON
from musenet_jax.errors import UserError
from musenet_jax.eval.nll import row_nlls, token_nlls

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
    anticipates = vocab.anticipates and not vocab.fills_in_middle
    context, slots = model.cfg.context, note_slots(vocab)
    plain, plain_rows, anticipated, plain_masks, anticipated_masks, in_view = [], [], [], [], [], []
    kept = []  # (events, span start, composer) of each scored piece
    for ids, start in zip(pieces, pick_spans(tokenizer, pieces, seconds, seed)):
        events = tokenizer.ids_to_events(ids)
        composer = tokenizer.composer_of(ids)
        whole = tokenizer.events_to_ids(events, composer)
        mask = span_tokens(tokenizer, whole, start, start + length, 0)
        if not mask.any():
            continue
        plain.append(whole)
        plain_masks.append(mask)
        plain_rows.append(_left_to_right_rows(tokenizer, whole, mask, context, slots))
        kept.append((events, start, composer))
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
    plain_nlls = _nlls_by_index(model, plain_rows, [len(ids) for ids in plain])
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
    if vocab.fills_in_middle:
        report.update(_fim_scores(model, tokenizer, kept, length))
    if anticipates:
        anticipated_nlls = token_nlls(model, tokenizer, anticipated)
        report["future_given_span_tokens"] = int(sum(m.sum() for m in anticipated_masks))
        report["future_given_bits_per_token"] = _bits(anticipated_nlls, anticipated_masks)
        report["by_view"] = _by_view(plain_nlls, anticipated_nlls, plain_masks, anticipated_masks, in_view)
        report["format"] = "anticipation"
        report["note"] = ""
    return report


def _fim_scores(
    model: Any, tokenizer: Tokenizer, kept: list[tuple[Events, int, str | None]], length: int
) -> dict[str, Any]:
    """(a) for a fill-in-the-middle run, and its control: the same span tokens with the given rest of the
    next scored piece in place of the piece's own (moved to start where the piece's rest would), so a gain
    that the format alone gives, not what the given notes say, shows as no difference."""
    vocab, step = tokenizer.vocab, tokenizer.step_s
    context, slots = model.cfg.context, note_slots(vocab)
    rows, controls, masks, span_starts = [], [], [], []
    for k, (events, start, composer) in enumerate(kept):
        seq = fim.fim_sequence(tokenizer, events, start, start + length, composer)
        rows.append([fim.fim_row(seq, tokenizer, context, slots)])
        kinds = vocab.token_kinds[seq.ids]
        masks.append(np.isin(kinds, (KIND_NOTE_ON, KIND_NOTE_OFF)) & (np.arange(len(seq.ids)) >= seq.span_at))
        other, other_start, _ = kept[(k + 1) % len(kept)]
        other_rest = other.select(np.rint(other.start_s / step) >= other_start + length)
        moved = other_rest.replace(
            start_s=other_rest.start_s + (start - other_start) * step,
            end_s=other_rest.end_s + (start - other_start) * step,
        )
        own = events.select(np.rint(events.start_s / step) < start + length)
        joined = Events.from_columns(
            *(
                np.concatenate([getattr(own, c), getattr(moved, c)])
                for c in ("start_s", "end_s", "family", "pitch", "velocity")
            )
        ).sorted()
        swapped = fim.fim_sequence(tokenizer, joined, start, start + length, composer)
        assert swapped.span_at - swapped.middle_at == seq.span_at - seq.middle_at  # the same stream
        controls.append([fim.fim_row(swapped, tokenizer, context, slots)])
        span_starts.append((seq.span_at, swapped.span_at))
    nlls = _nlls_by_index(model, rows, [len(r[0]["ids"]) for r in rows])
    masks = [m & np.isfinite(n) for m, n in zip(masks, nlls)]  # a span longer than its row's room
    control_nlls = _nlls_by_index(model, controls, [len(r[0]["ids"]) for r in controls])
    control_masks = []
    for control, mask, (own_at, swapped_at) in zip(control_nlls, masks, span_starts):
        same = np.zeros(len(control), bool)  # the same span tokens, where the swapped sequence holds them
        same[swapped_at:] = mask[own_at:]
        control_masks.append(same & np.isfinite(control))
    return {
        "format": "fill_in_middle",
        "future_given_span_tokens": int(sum(m.sum() for m in masks)),
        "future_given_bits_per_token": _bits(nlls, masks),
        "another_pieces_rest_given_bits_per_token": _bits(control_nlls, control_masks),
        "note": "",
    }


def _left_to_right_rows(
    tokenizer: Tokenizer, whole: np.ndarray, mask: np.ndarray, context: int, slots: NoteSlots
) -> list[dict[str, np.ndarray]]:
    """The rows that score a span left to right: the prefix, then the plain piece up to a point of the
    span, as much of it as fits. A span that fits half a window is one row ending with it; a longer one
    is scored half a window at a time, each token with at least half a window before it."""
    vocab = tokenizer.vocab
    n_prefix = min(tokenizer.prefix_length(whole), context // 2)
    width = context + 1 - n_prefix
    times, duration = token_times(whole, vocab), duration_steps(whole, vocab)
    positions = np.flatnonzero(mask)
    rows, first = [], int(positions[0])
    while first <= positions[-1]:
        stop = min(int(positions[-1]) + 1, first + width // 2)
        begin = max(n_prefix, stop - width)
        take = np.concatenate([np.arange(n_prefix), np.arange(begin, stop)])
        head = held_before(whole, begin, slots)
        rows.append(_row(whole, take, times, duration, head, context, vocab.pad_id, first))
        first = stop
    return rows


def _row(
    ids: np.ndarray,
    take: np.ndarray,
    times: np.ndarray,
    duration: int,
    head: np.ndarray,
    context: int,
    pad: int,
    first_scored: int,
) -> dict[str, np.ndarray]:
    row = np.full(context + 1, pad, np.int32)
    row_times = np.zeros(context + 1, np.int32)
    row[: len(take)], row_times[: len(take)] = ids[take], times[take]
    return {
        "inputs": row[:-1],
        "targets": row[1:],
        "times": row_times[:-1],
        "durations": np.int32(max(duration, 1)),
        "sounding_head": head,
        "take": take,
        "ids": ids,
        "first_scored": first_scored,  # the row scores the tokens from here on
    }


def _nlls_by_index(
    model: Any, rows: list[list[dict[str, np.ndarray]]], lengths: list[int]
) -> list[np.ndarray]:
    """Per sequence (its rows), each token's negative log-likelihood (nats) where a row scores it, NaN
    elsewhere."""
    nlls = iter(row_nlls(model, [row for piece in rows for row in piece]))
    out = []
    for piece, length in zip(rows, lengths):
        full = np.full(length, np.nan)
        for row in piece:
            nll, take = next(nlls), row["take"]
            scored = take[1:] >= row.get("first_scored", 0)
            full[take[1:][scored]] = nll[: len(take) - 1][scored]
        out.append(full)
    return out


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
    """Bits per token of the masked tokens (each masked token must have a score)."""
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
        if "another_pieces_rest_given_bits_per_token" in report:
            lines.append(
                "  bits/token, another piece's rest given (control): "
                f"{report['another_pieces_rest_given_bits_per_token']:.3f}"
            )
        for name, label in (
            ("none_in_view", "no given note in view yet"),
            ("given_in_view", "given notes in view"),
        ):
            if "by_view" not in report:  # filled in the middle: the whole given future in view
                break
            part = report["by_view"][name]
            lines.append(
                f"    {label + ':':27s} (b) {part['left_to_right_bits_per_token']:.3f}  "
                f"(a) {part['future_given_bits_per_token']:.3f}  ({part['span_tokens']} tokens)"
            )
    if report["note"]:
        lines.append(report["note"])
    return "\n".join(lines)
