"""Fill in the middle, in time (`encoding.span_infill: fill_in_middle`; Bavarian et al. 2022, "Efficient
Training of Language Models to Fill in the Middle", its suffix-prefix-middle order).

Anticipation shows a span's model the given notes after the span only `anticipation_s` ahead of their
time, so the span's first seconds are written with nothing of the future in view. Here the given rest of
the piece comes first, as control tokens, and the piece then runs from its beginning through the span:

    composer, instruments..., start, fim:suffix, <after>, fim:middle, <before>, <span>

- <after>: the notes that start at or after the span's end `stop`, as controls (`ctl:piano:v3:G4`, their
  note-offs `ctl:piano:v0:G4`), with waits counted from the span's start: the first waits say how far
  after the span's start the given music resumes. They are given, so they are left out of the loss.
- <before> <span>: the plain sequence of the notes that start before `stop`, up to `stop`, with the wait
  that crosses the span's start `start` split there (a request's prompt ends there; `<span>` is what the
  model writes). Notes held past `stop` have no note-off in it: a span's notes are cut where it ends.
  Its clock starts at 0 again: `fim:middle` takes the clock back to where `fim:suffix` found it
  (`encoding/timing.py`), and the model's timing inputs place `<after>` at `start` + its waits
  (`input_times`).

`<before>` and `<span>` are one plain stream, so a window the sampler slides keeps `<after>` with the
conditioning prefix (`Request.prefix_length` covers it) and the latest of the stream, as it keeps a plain
piece's. A training row holds the prefix, the first `suffix_tokens(context)` tokens of `<after>` and the
stream's window around the span's start (`row_take`); evaluation scores the span in the same rows.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from musenet_jax.encoding.events import Events
from musenet_jax.encoding.slots import NoteSlots, held_before
from musenet_jax.encoding.timing import in_suffix, token_times
from musenet_jax.encoding.tokenizer import Tokenizer, interleave_waits

SHARE = 0.5  # of a training mix: span rows (the rest: plain and accompaniment, encoding/anticipation.py)
SPAN_SECONDS = 8.0  # a training span lasts 0.5x to 1.5x this


@dataclasses.dataclass(frozen=True)
class FimSequence:
    """One piece with one span in the fill-in-the-middle order, and where its parts lie in `ids`."""

    ids: np.ndarray  # int32: prefix, fim:suffix, <after>, fim:middle, <before>, <span>
    n_prefix: int  # tokens before fim:suffix
    middle_at: int  # index of fim:middle; <before> starts after it
    span_at: int  # index of the span's first token (len(ids) when the span is empty)
    start_step: int  # the span's start, in time steps
    piece_steps: int  # the whole piece's length, for the countdown embedding

    @property
    def head_length(self) -> int:
        """Tokens through fim:middle: the part a window always keeps."""
        return self.middle_at + 1


def suffix_tokens(context: int, n_prefix: int) -> int:
    """How many tokens of `<after>` a window holds: a quarter of the context, so that the sampler's slide
    (which keeps the head and refills half the context) leaves the stream at least a quarter."""
    return max(context // 4 - n_prefix - 2, 0)


def fim_sequence(
    tokenizer: Tokenizer,
    events: Events,
    start_step: int,
    stop_step: int,
    composer: str | None,
    *,
    suffix_limit: int | None = None,
    families: np.ndarray | None = None,
) -> FimSequence:
    """The piece `events` with the span [start_step, stop_step) to fill: the notes starting from
    `stop_step` on given as `<after>` (its first `suffix_limit` tokens, if given), the others as the plain
    stream through the span; the prefix lists `families` (default: those of `events`)."""
    vocab, step = tokenizer.vocab, tokenizer.step_s
    onset = np.rint(events.start_s / step).astype(np.int64)
    after = events.select(onset >= stop_step)
    steps, tokens = tokenizer.timed_tokens(events.select(onset < stop_step))
    keep = steps < stop_step
    steps, tokens = steps[keep], tokens[keep]
    before = steps < start_step
    max_wait = tokenizer.cfg.max_wait_steps
    pad = vocab.pad_id
    # the stream's waits split at the span's start and run to its end: pad marks the two points
    stream = interleave_waits(
        np.concatenate([steps[before], [start_step], steps[~before], [stop_step]]),
        np.concatenate([tokens[before], [pad], tokens[~before], [pad]]),
        vocab,
        max_wait,
    )
    span_at = int(np.flatnonzero(stream == pad)[0])
    stream = np.delete(stream, [span_at, len(stream) - 1])
    control_steps, control_notes = tokenizer.timed_tokens(after)
    controls = control_notes + vocab.control_shift
    suffix = interleave_waits(control_steps - start_step, controls, vocab, max_wait)
    if suffix_limit is not None:
        suffix = suffix[:suffix_limit]
    prefix = tokenizer.prefix(composer, events.family if families is None else families)
    ids = np.concatenate([prefix, [vocab.fim_suffix_id], suffix, [vocab.fim_middle_id], stream]).astype(
        np.int32
    )
    middle_at = len(prefix) + 1 + len(suffix)
    piece_steps = max(int(np.rint(events.end_s.max() / step)) if len(events) else 0, stop_step, 1)
    return FimSequence(ids, len(prefix), middle_at, middle_at + 1 + span_at, start_step, piece_steps)


def input_times(ids: np.ndarray, tokenizer: Tokenizer, start_step: int) -> np.ndarray:
    """The model's timing input for a fill-in-the-middle sequence: `<after>` at the span's start plus its
    waits, the rest at their clock (`token_times`)."""
    vocab = tokenizer.vocab
    return (token_times(ids, vocab) + np.where(in_suffix(ids, vocab), start_step, 0)).astype(np.int32)


def row_take(seq: FimSequence, rows: int) -> np.ndarray:
    """Indices of `seq.ids` one row of `rows` tokens holds: the head through fim:middle (`<after>` cut to
    `suffix_tokens`), then a window of the stream with as much of the span as half the room holds and as
    much before it as the rest."""
    suffix_end = min(seq.middle_at, seq.n_prefix + 1 + suffix_tokens(rows - 1, seq.n_prefix))
    head = np.concatenate([np.arange(suffix_end), [seq.middle_at]])
    room = rows - len(head)
    stream_start = seq.middle_at + 1
    span_len, before_len = len(seq.ids) - seq.span_at, seq.span_at - stream_start
    span_take = min(span_len, room // 2)
    before_take = min(before_len, room - span_take)
    span_take = min(span_len, room - before_take)
    return np.concatenate([head, np.arange(seq.span_at - before_take, seq.span_at + span_take)])


def fim_row(seq: FimSequence, tokenizer: Tokenizer, context: int, slots: NoteSlots) -> dict[str, np.ndarray]:
    """One training (or scoring) row: inputs, targets, times [context]; durations; the notes held where the
    stream's window starts; `counted` [context], the targets that count (never the given `<after>` or the
    markers); `take`, where each row token is in `seq.ids`."""
    vocab = tokenizer.vocab
    take = row_take(seq, context + 1)
    times = input_times(seq.ids, tokenizer, seq.start_step)
    row = np.full(context + 1, vocab.pad_id, np.int32)
    row_times = np.zeros(context + 1, np.int32)
    row[: len(take)], row_times[: len(take)] = seq.ids[take], times[take]
    head_count = int(np.searchsorted(take, seq.middle_at)) + 1  # take is ascending
    window_at = int(take[head_count]) if head_count < len(take) else len(seq.ids)
    given = (take[1:] >= seq.n_prefix) & (take[1:] <= seq.middle_at)
    counted = np.zeros(context, bool)
    counted[: len(take) - 1] = ~given
    return {
        "inputs": row[:-1],
        "targets": row[1:],
        "times": row_times[:-1],
        "durations": np.int32(seq.piece_steps),
        "sounding_head": held_before(seq.ids, window_at, slots),
        "counted": counted,
        "take": take,
        "ids": seq.ids,
    }


def random_span(tokenizer: Tokenizer, events: Events, rng: np.random.Generator) -> tuple[int, int]:
    """A training span, (start, stop) in time steps: 0.5x to 1.5x `SPAN_SECONDS`, placed uniformly so that
    it ends by the piece's last onset (at 0 in a shorter piece), as `eval --infill-spans` places its own."""
    length = SPAN_SECONDS * rng.uniform(0.5, 1.5)
    last = float(events.start_s.max()) if len(events) else 0.0
    start = rng.uniform(0.0, max(last - length, 0.0))
    start_step = round(start / tokenizer.step_s)
    return start_step, max(round((start + length) / tokenizer.step_s), start_step + 1)
