"""Batched KV-cache decoding: N candidates continue one prompt, one token per step each.

The prompt is prefilled into the cache once; then every step samples a token per candidate under the
token grammar (`grammar.py`) and the creativity filters (`filtering.py`), appends it to the cache and
stops a candidate at `end` (unless its request may not end) or when its music reaches the requested
length (the last wait is cut to land exactly on it). Steps run in jitted chunks (`lax.fori_loop`), so
the host only looks in between to update the progress bar and to see whether everyone is done.

Given tokens (`Request.forced`: anticipation's controls, sample/infill.py) are written by the sampler
itself when the clock reaches their time, before anything is drawn at that step; a drawn wait that
would pass one is cut to land on it, and `end` waits until none is left before the stop. Where the
encoding writes a step's controls after its events (`anticipation_order: events_first`), a control is
written instead of the wait that leaves its step, then the step's other controls, then a wait.

A piece longer than the context slides on: when the cache is full it is rebuilt from the
conditioning prefix and the latest tokens (`context // 2` in all), as training crops keep the prefix
at the head of a window. Times stay absolute, so the timing and countdown embeddings do not notice.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from musenet_jax.data.form_plans import Plan
from musenet_jax.encoding.timing import token_times
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.encoding.vocab import KIND_CONTROL_ON
from musenet_jax.errors import UserError
from musenet_jax.model.cache import KVCache
from musenet_jax.model.sounding import held_before_positions
from musenet_jax.model.transformer import MuseNet
from musenet_jax.sample.conditioning import Request
from musenet_jax.sample.config import SampleConfig
from musenet_jax.sample.filtering import draw
from musenet_jax.sample.form import current_lag, draw_plans, form_bonus, reprise_token
from musenet_jax.sample.grammar import (
    GrammarState,
    GrammarTables,
    advance,
    allowed_tokens,
    close_sequence,
    family_sounding,
    heard_at,
    key_penalty,
    motif_bonus,
    owed_parts,
    replay,
)

CHUNK_STEPS = 32  # decoding steps per jitted call between progress updates
NEVER = np.iinfo(np.int32).max  # the time of a forced token that is not there


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One sampled piece: the whole token sequence and how the model liked its own tokens."""

    ids: np.ndarray  # int32: prompt + sampled tokens (+ closing note-offs) + end
    prompt_length: int  # tokens of prefix + intro at the head of `ids`
    sampled: int  # tokens the model drew (closing tokens and given, forced ones not included)
    mean_logprob: float  # mean log-probability (nats) of the drawn tokens under the model, temperature 1
    stopped_by: str  # "end", "length" or "budget"
    open_ids: np.ndarray  # int32: prompt + sampled tokens as drawn, not closed (to be continued later)

    @property
    def continuation(self) -> np.ndarray:
        return self.ids[self.prompt_length :]


@struct.dataclass
class DecodeState:
    cache: KVCache
    logits: jax.Array  # float32 [B, V]: next-token logits
    tokens: jax.Array  # int32 [B, H]: every token so far (prompt first)
    times: jax.Array  # int32 [B, H]: the time each token happens at
    length: jax.Array  # int32: tokens in `tokens`
    grammar: GrammarState
    durations: jax.Array  # int32 [B]: the piece's whole length in steps (countdown embedding)
    stop_at: jax.Array  # int32 [B]: the time sampling stops at
    families: jax.Array  # bool [B, families]
    may_end: jax.Array  # bool [B]: whether `end` may be drawn
    done: jax.Array  # bool [B]
    stop: jax.Array  # int8 [B]: 0 running, 1 end, 2 length
    logprob: jax.Array  # float32 [B]: sum over drawn tokens
    drawn: jax.Array  # int32 [B]: tokens appended after the prompt, forced ones included
    forced: jax.Array  # int32 [B, F]: given tokens to write (Request.forced), padded
    forced_at: jax.Array  # int32 [B, F]: the time each is due; NEVER for padding
    forced_next: jax.Array  # int32 [B]: how many have been written
    closing: jax.Array  # bool [B]: a control closed the step (events_first): its controls, then a wait
    owed: jax.Array  # bool [B, families]: requested families, which may rest only so long (grammar rule 12)
    heard: jax.Array  # int32 [B, families]: the time each last sounded (the start of the new music at first)
    rest: jax.Array  # int32 [B]: the longest rest of an owed family, in steps
    plan: jax.Array  # int32 [B, repeats, 3]: the form plan's (start, lag, end) repeats (grammar rule 13)
    # bool [B, T]: where a given note starts, on the events' clock (grammar rule 14); T = 0 where the rule is
    # off or no row listens, so the decoding loop leaves the rule out
    together: jax.Array
    listening: jax.Array  # bool [B]: rows that add a part to given notes, the ones rule 14 applies to
    key: jax.Array


def gives_notes(request: Request, tables: GrammarTables) -> bool:
    """Whether a request holds given notes (to accompany, or a span's surroundings), which carry its form."""
    return bool(len(request.forced)) or bool(np.any(request.prompt == tables.fim_middle_id))


class Sampler:
    """Jitted prefill / decode chunk / window slide for one model and one set of sampling settings.

    Compiled functions are kept between `sample` calls (one compile per prompt length and batch size).
    """

    def __init__(
        self,
        model: MuseNet,
        tokenizer: Tokenizer,
        settings: SampleConfig = SampleConfig(),
        tables: GrammarTables | None = None,
        plans: Mapping[str, Sequence[Plan]] | None = None,
    ):
        """`tables`: the grammar (default: rules 1-5 of `grammar.py`, no facts of the data); `plans`: each
        composer's form plans, for rule 13 where `tables.form_bias` is on (`NoteFacts.composer_plans`)."""
        self.graphdef, self.params = nnx.split(model)
        self.context = model.cfg.context
        self.tokenizer = tokenizer
        self.settings = settings
        self.tables = GrammarTables.from_vocab(tokenizer.vocab) if tables is None else tables
        self.plans = dict(plans or {})
        self._prefill = jax.jit(self._prefill_impl, static_argnames=("head", "body", "cache_len"))
        self._chunk = jax.jit(self._chunk_impl)
        self._replay = jax.jit(functools.partial(replay, tables=self.tables))

    # --- jitted pieces --------------------------------------------------------------------------

    def _model(self, params: Any) -> MuseNet:
        return nnx.merge(self.graphdef, params)

    def _prefill_impl(
        self, params: Any, st: DecodeState, head: int, body: int, cache_len: int
    ) -> DecodeState:
        """Rebuilds a cache of `cache_len` positions from the first `head` tokens and the latest `body`
        ones."""
        model = self._model(params)
        inputs, times = st.tokens[:, :head], st.times[:, :head]
        sounding_head = None
        if body:
            start = st.length - body
            if model.note_slots is not None:  # notes held from the history that left the window
                sounding_head = held_before_positions(st.tokens, start, model.note_slots)
            inputs = jnp.concatenate(
                [inputs, jax.lax.dynamic_slice_in_dim(st.tokens, start, body, axis=1)], axis=1
            )
            times = jnp.concatenate(
                [times, jax.lax.dynamic_slice_in_dim(st.times, start, body, axis=1)], axis=1
            )
        cache = model.init_cache(st.tokens.shape[0], cache_len)
        logits, cache = model.prefill(inputs, times, st.durations, cache, sounding_head)
        return st.replace(cache=cache, logits=logits[:, -1])

    def _chunk_impl(self, params: Any, st: DecodeState, steps: jax.Array) -> DecodeState:
        tables = self.tables
        events_first = self.tokenizer.cfg.anticipation_order == "events_first"
        is_control, is_wait = jnp.asarray(tables.is_control), jnp.asarray(tables.is_wait)
        wait_steps = jnp.asarray(tables.wait_steps)

        def one(_: jax.Array, carry: tuple[Any, DecodeState]) -> tuple[Any, DecodeState]:
            params, st = carry  # the parameters ride in the carry: NNX merges them at the loop's trace level
            model = self._model(params)
            key, sub = jax.random.split(st.key)
            time = st.grammar.time
            column = jnp.minimum(st.forced_next, st.forced.shape[1] - 1)[:, None]
            forced = jnp.take_along_axis(st.forced, column, axis=1)[:, 0]
            forced_at = jnp.take_along_axis(st.forced_at, column, axis=1)[:, 0]
            due = forced_at == time  # padding is NEVER due
            pending = forced_at < st.stop_at
            waits_for_leaving = (
                due & is_control[forced] & ~st.closing if events_first else jnp.zeros_like(due)
            )
            due_at = st.heard + st.rest[:, None]  # [B, families]: when each owed family must play again
            part_due = st.owed & (time[:, None] >= due_at)
            may_end = st.may_end & ~pending & ~part_due.any(1)
            allowed = owed_parts(allowed_tokens(st.grammar, tables, st.families, may_end), tables, part_due)
            if events_first:  # the wait that leaves a step is where its controls go, even after a short wait
                allowed = allowed | (is_wait[None] & waits_for_leaving[:, None])
                closed = allowed & is_wait[None]
                allowed = jnp.where(st.closing[:, None] & jnp.any(closed, 1, keepdims=True), closed, allowed)
            biased = st.logits + key_penalty(st.grammar, tables) if tables.key_bias else st.logits
            biased = biased + motif_bonus(st.grammar, tables) if tables.motif_bias else biased
            if tables.form_bias:
                lag = current_lag(st.plan, time)

                def reprise() -> jax.Array:  # a scan of the whole history: only while a repeat is under way
                    again = reprise_token(st.tokens, st.times, st.length, st.grammar, lag, tables)
                    return form_bonus(again, biased.shape[1], tables.form_bias)

                biased = biased + jax.lax.cond(jnp.any(lag > 0), reprise, lambda: jnp.zeros_like(biased))
            if st.together.shape[1]:  # rule 14: nothing gains; at a given onset, playing stays the model's
                lands = jnp.clip(time[:, None] + wait_steps[None], 0, st.together.shape[1] - 1)
                on_onset = jnp.take_along_axis(st.together, lands, axis=1) & is_wait[None]
                astray = is_wait[None] & ~on_onset & jnp.any(on_onset & allowed, 1, keepdims=True)
                off_beat = ~st.together[
                    jnp.arange(time.shape[0]), jnp.minimum(time, st.together.shape[1] - 1)
                ]
                apart = jnp.asarray(tables.is_on)[None] & off_beat[:, None]
                biased = biased - tables.onset_bias * (st.listening[:, None] & (astray | apart))
            token = draw(sub, jnp.where(allowed, biased, -jnp.inf), self.settings)
            logp = jnp.take_along_axis(jax.nn.log_softmax(st.logits, axis=-1), token[:, None], axis=1)[:, 0]
            due = due & ~(waits_for_leaving & (wait_steps[token] == 0))  # a drawn event of the step first
            # A wait lands on the next given token, and where a resting owed family must play again.
            land_at = jnp.where(pending, forced_at, NEVER)
            sounding = family_sounding(st.grammar, tables)
            resting = st.owed & ~sounding & (due_at > time[:, None])
            next_due = jnp.min(jnp.where(resting, due_at, NEVER), axis=1)
            land_at = jnp.minimum(land_at, next_due)
            passes = (wait_steps[token] > 0) & (time + wait_steps[token] > land_at)
            token = jnp.where(passes, tables.wait_base + land_at - time - 1, token)
            steps_of = wait_steps[token]
            reaches = ~due & (steps_of > 0) & (time + steps_of >= st.stop_at)
            token = jnp.where(reaches, tables.wait_base + st.stop_at - time - 1, token)  # cut the last wait
            token = jnp.where(due, forced, token)
            active = ~st.done
            token = jnp.where(active, token, tables.pad_id)
            ended = active & (token == tables.end_id)
            closes = (st.closing | (due & is_control[forced])) & (wait_steps[token] == 0)
            logits, cache = model.decode_step(token, time, st.durations, st.cache)
            grammar = advance(st.grammar, token, tables, active)
            return params, st.replace(
                cache=cache,
                logits=logits,
                tokens=jax.lax.dynamic_update_slice_in_dim(st.tokens, token[:, None], st.length, axis=1),
                times=jax.lax.dynamic_update_slice_in_dim(st.times, time[:, None], st.length, axis=1),
                length=st.length + 1,
                grammar=grammar,
                done=st.done | ended | (active & reaches),
                stop=jnp.where(ended, 1, jnp.where(active & reaches, 2, st.stop)).astype(jnp.int8),
                logprob=st.logprob + jnp.where(active & ~due, logp, 0.0),
                drawn=st.drawn + active.astype(jnp.int32),
                forced_next=st.forced_next + (active & due).astype(jnp.int32),
                closing=jnp.where(active, closes, st.closing) if events_first else st.closing,
                heard=heard_at(st.heard, sounding, grammar, token, tables),
                key=key,
            )

        return jax.lax.fori_loop(0, steps, one, (params, st))[1]

    # --- the host loop ----------------------------------------------------------------------------

    def _initial_state(self, requests: Sequence[Request], history: int, seed: int) -> DecodeState:
        vocab = self.tokenizer.vocab
        prompt = np.stack([r.prompt for r in requests])
        tokens = np.full((len(requests), history), vocab.pad_id, np.int32)
        times = np.zeros((len(requests), history), np.int32)
        tokens[:, : prompt.shape[1]] = prompt
        times[:, : prompt.shape[1]] = np.stack(
            [token_times(r.prompt, vocab) if r.times is None else r.times for r in requests]
        )
        num = len(requests)
        width = 1 + max(len(r.forced) for r in requests)  # a NEVER column after the last one
        forced = np.full((num, width), vocab.pad_id, np.int32)
        forced_at = np.full((num, width), NEVER, np.int32)
        for row, r in enumerate(requests):
            forced[row, : len(r.forced)], forced_at[row, : len(r.forced)] = r.forced, r.forced_at
        grammar = self._replay(jnp.asarray(prompt))
        owed, rest = self._owed_parts(requests, np.asarray(grammar.time))
        together, listening = self._given_onsets(requests)
        return DecodeState(
            cache=None,
            logits=None,
            tokens=jnp.asarray(tokens),
            times=jnp.asarray(times),
            length=jnp.asarray(prompt.shape[1], jnp.int32),
            grammar=grammar,
            durations=jnp.asarray([r.piece_steps for r in requests], jnp.int32),
            stop_at=jnp.asarray([r.target_steps for r in requests], jnp.int32),
            families=jnp.asarray(np.stack([r.families for r in requests])),
            may_end=jnp.asarray([r.may_end for r in requests], bool),
            done=jnp.zeros((num,), bool),
            stop=jnp.zeros((num,), jnp.int8),
            logprob=jnp.zeros((num,), jnp.float32),
            drawn=jnp.zeros((num,), jnp.int32),
            forced=jnp.asarray(forced),
            forced_at=jnp.asarray(forced_at),
            forced_next=jnp.zeros((num,), jnp.int32),
            closing=jnp.zeros((num,), bool),
            owed=jnp.asarray(owed),
            heard=jnp.broadcast_to(grammar.time[:, None], owed.shape),
            rest=jnp.asarray(rest),
            plan=jnp.asarray(self._plans(requests, seed)),
            together=jnp.asarray(together),
            listening=jnp.asarray(listening),
            key=jax.random.key(seed),
        )

    def _plans(self, requests: Sequence[Request], seed: int) -> np.ndarray:
        """Each row's form plan (rule 13), drawn from its composer's; none where the rule is off or the
        request gives notes (infilling, accompaniment: the given notes carry the form)."""
        drawing = self.tables.form_bias > 0
        composers = [
            self.tokenizer.composer_of(r.prompt) if drawing and not gives_notes(r, self.tables) else None
            for r in requests
        ]
        return draw_plans(self.plans, composers, [r.target_steps for r in requests], seed)

    def _given_onsets(self, requests: Sequence[Request]) -> tuple[np.ndarray, np.ndarray]:
        """(together bool [B, T], listening bool [B]) of rule 14: the events' clock steps where a given
        note starts, a control note-on's time (in the prompt or still to be written) plus the anticipation
        interval; and the rows that add a part to given notes (accompaniment). An infill's span has no
        given onset in it and a continuation none at all: the rule would silence them, so they do not
        listen. [B, 0] where the rule is off or no row listens."""
        vocab = self.tokenizer.vocab
        listening = np.zeros(len(requests), bool)
        if not self.tables.onset_bias:
            return np.zeros((len(requests), 0), bool), listening
        horizon = max(r.target_steps for r in requests) + 1
        together = np.zeros((len(requests), horizon), bool)
        for row, r in enumerate(requests):
            if r.times is not None:  # a span filled in the middle: no given onset in the span
                continue
            in_prompt = token_times(r.prompt, vocab)[vocab.token_kinds[r.prompt] == KIND_CONTROL_ON]
            forced = r.forced_at[vocab.token_kinds[r.forced] == KIND_CONTROL_ON]
            onsets = np.concatenate([in_prompt, forced]) + vocab.anticipation_steps
            together[row, onsets[onsets < horizon]] = True
            listening[row] = len(onsets) > 0 and r.owed is not None and bool(r.owed.any())
        return (together if listening.any() else together[:, :0]), listening

    def _owed_parts(self, requests: Sequence[Request], start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(owed bool [B, families], rest int32 [B]) of grammar rule 12: the requested families and how long
        each may rest, `part_rest_s` or half the new music, whichever is shorter (none owed when off)."""
        families = len(self.tokenizer.vocab.families)
        rest_steps = round(self.settings.part_rest_s * 1000 / self.tokenizer.cfg.time_step_ms)
        owed = np.zeros((len(requests), families), bool)
        if rest_steps > 0:
            for row, r in enumerate(requests):
                owed[row] = False if r.owed is None else r.owed
        stop = np.asarray([r.target_steps for r in requests], np.int64)
        return owed, np.maximum(np.minimum(rest_steps, (stop - start) // 2), 1).astype(np.int32)

    def sample(
        self,
        requests: Sequence[Request],
        *,
        max_new_tokens: int,
        seed: int = 0,
        history: int | None = None,
        progress: Callable[[int, float], None] | None = None,
    ) -> list[Candidate]:
        """One continuation per request, decoded as one batch; the prompts must have equal lengths and
        prefixes (N candidates of one piece: the same request N times).

        `history` (default: prompt + max_new_tokens) sizes the token buffer; callers sampling many
        prompt lengths pass one value to reuse the compiled decoding loop. `progress(tokens_done,
        music_seconds_of_the_slowest)` is called after each chunk.
        """
        if not requests or max_new_tokens < 1:
            raise UserError("the number of samples and the token budget must be at least 1")
        prompt_length, prefix_length = len(requests[0].prompt), requests[0].prefix_length
        if any(len(r.prompt) != prompt_length or r.prefix_length != prefix_length for r in requests):
            raise UserError("requests sampled together need prompts and prefixes of equal length")
        keep = self.context // 2
        if prefix_length >= keep:
            raise UserError(
                f"a prefix of {prefix_length} tokens leaves no room in a context of {self.context}"
            )
        history = prompt_length + max_new_tokens if history is None else history
        if history < prompt_length + max_new_tokens:
            raise UserError(f"history {history} < prompt {prompt_length} + budget {max_new_tokens}")
        st = self._initial_state(requests, history, seed)
        if prompt_length < self.context:
            # A piece that fits the context never slides: its cache holds just its history, so each
            # decoding step attends over that many keys, not the whole context.
            cache_len = min(self.context, history)
            st = self._prefill(self.params, st, head=prompt_length, body=0, cache_len=cache_len)
            in_cache = prompt_length
        else:
            st, in_cache = self._slide(st, prefix_length), keep
        drawn = 0
        step_s = self.tokenizer.cfg.time_step_ms / 1000
        while drawn < max_new_tokens:
            if in_cache == self.context:
                st, in_cache = self._slide(st, prefix_length), keep
            steps = min(CHUNK_STEPS, self.context - in_cache, max_new_tokens - drawn)
            st = self._chunk(self.params, st, jnp.asarray(steps, jnp.int32))
            drawn, in_cache = drawn + steps, in_cache + steps
            done = np.asarray(st.done)
            if progress is not None:
                running = np.asarray(st.grammar.time)[~done]
                slowest = running.min() if len(running) else max(r.target_steps for r in requests)
                progress(steps, float(slowest) * step_s)
            if done.all():
                break
        return self._candidates(st, prompt_length)

    def _slide(self, st: DecodeState, prefix_length: int) -> DecodeState:
        body = self.context // 2 - prefix_length
        return self._prefill(self.params, st, head=prefix_length, body=body, cache_len=self.context)

    def _candidates(self, st: DecodeState, prompt_length: int) -> list[Candidate]:
        tokens = np.asarray(st.tokens)[:, : int(st.length)]
        busy = np.asarray(st.grammar.busy_until)
        stop, drawn, logprob = np.asarray(st.stop), np.asarray(st.drawn), np.asarray(st.logprob)
        written = np.asarray(st.forced_next)
        out = []
        for row in range(tokens.shape[0]):
            drawn_ids = ids = tokens[row, : prompt_length + int(drawn[row])]
            if stop[row] != 1:
                ids = close_sequence(ids, busy[row], self.tables)
            out.append(
                Candidate(
                    ids=ids.astype(np.int32),
                    prompt_length=prompt_length,
                    sampled=int(drawn[row] - written[row]),
                    mean_logprob=float(logprob[row] / max(int(drawn[row] - written[row]), 1)),
                    stopped_by=("budget", "end", "length")[int(stop[row])],
                    open_ids=drawn_ids.astype(np.int32),
                )
            )
        return out
