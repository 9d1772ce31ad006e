"""The co-composer, apart from any web stack: a piece grown by choosing among candidate continuations.

MuseNet's tool: pick a composer, instruments and an intro; get N candidate continuations; choose one and
the piece grows by it, then N more continue the whole piece so far (the sampler slides its window past
the context, keeping the conditioning prefix at its head); Undo steps back a round. A `Session` is one
user's piece and its rounds; the `CoComposer` holds the model, loaded once, and serves every session.

A piece is kept open: its tokens up to where the chosen continuation stopped, without closing note-offs
or `end`, so a note held across the seam keeps sounding into the next continuation. Its MIDI file closes
such notes at the end.

With a model trained with anticipation (`encoding.anticipation_s` > 0) a round can also work inside the
piece so far (`sample/infill.py`): "fill a span" offers candidates that rewrite the notes starting in
[start, end) seconds, "add a part" candidates that add families to all of it; the given notes stay as
they are. A model without anticipation refuses both in one line (`infill_note`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import pathlib
import secrets
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from musenet_jax.app.openings import opening_midi
from musenet_jax.app.run import Run
from musenet_jax.encoding.anticipation import require_anticipation
from musenet_jax.encoding.events import Events
from musenet_jax.encoding.families import FAMILIES
from musenet_jax.encoding.timing import duration_steps
from musenet_jax.errors import UserError
from musenet_jax.render.audio import renderer
from musenet_jax.render.pianoroll import save_given_and_new, save_pianoroll
from musenet_jax.sample.budget import token_budget
from musenet_jax.sample.conditioning import Request, intro_events, parse_instruments
from musenet_jax.sample.config import SampleConfig
from musenet_jax.sample.infill import (
    Given,
    anticipated_request,
    given_and_new,
    given_for_accompaniment,
    given_for_infill,
    new_notes,
    with_new_notes,
)
from musenet_jax.sample.sampler import Candidate, Sampler

MAX_CANDIDATES = 8
MAX_CONTINUATION_SECONDS = 60.0
# MuseNet's pieces run 4 minutes: a continuation is told it is part of a piece this long (the countdown
# embedding), not its close, unless the run's sample.piece_seconds says otherwise.
DEFAULT_PIECE_SECONDS = 240.0
# Token buffers are rounded up to a multiple of this, so the compiled decoding loop is reused as the piece
# grows instead of compiling once per length.
HISTORY_BUCKET = 1024
SAMPLERS_KEPT = 4  # compiled samplers kept, one per (temperature, top-p) asked for


class Stopped(UserError):
    """The user stopped a request before its candidates were done."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """One request's choices. Composer and instruments shape a new piece's prefix; a continuation keeps
    its piece's."""

    composer: str
    instruments: tuple[str, ...]
    seconds: float
    temperature: float
    top_p: float
    num_candidates: int = 4

    def __post_init__(self) -> None:
        if not self.instruments:
            raise UserError("choose at least one instrument")
        parse_instruments(list(self.instruments))  # an unknown one is a line naming the valid ones
        if not 0 < self.seconds <= MAX_CONTINUATION_SECONDS:
            raise UserError(
                f"seconds per continuation must be in (0, {MAX_CONTINUATION_SECONDS:.0f}], got {self.seconds}"
            )
        if not 1 <= self.num_candidates <= MAX_CANDIDATES:
            raise UserError(f"candidates must be 1 to {MAX_CANDIDATES}, got {self.num_candidates}")
        try:  # temperature and top-p are checked where every sampling knob is
            SampleConfig(temperature=self.temperature, top_p=self.top_p)
        except ValueError as err:
            raise UserError(str(err)) from None


@dataclasses.dataclass(frozen=True)
class Piece:
    """The music so far as open tokens: prefix (composer, instruments, start), then events."""

    ids: np.ndarray  # int32
    prefix_length: int
    allowed: np.ndarray  # bool [families]: the instruments its continuations may play
    composer: str


@dataclasses.dataclass(frozen=True)
class Continuation:
    """One candidate: the piece so far followed by new music, with the files the page shows."""

    ids: np.ndarray  # int32, open: the piece so far + this continuation
    start_s: float  # where the new music starts
    end_s: float
    critic_score: float | None  # the critic's P(real music) of the whole, None without a critic
    stopped_by: str  # "length", "end" (the model closed the piece) or "budget"
    notes: int
    roll: pathlib.Path  # piano roll of the whole, the seam dashed
    midi: pathlib.Path  # the whole as MIDI
    audio: pathlib.Path | None  # the new music alone as WAV, None without FluidSynth
    # the piece it becomes when chosen, where that is not the round's piece with these ids: a filled span
    # or an added part (its prefix lists the added families)
    becomes: Piece | None = None


@dataclasses.dataclass(frozen=True)
class Round:
    """A piece and the candidates offered to continue it."""

    piece: Piece
    candidates: tuple[Continuation, ...]
    folder: pathlib.Path  # this round's files
    midi: pathlib.Path  # the piece as MIDI (Download)
    roll: pathlib.Path | None  # None while the piece has no notes
    audio: pathlib.Path | None
    seconds: float
    notes: int


class Session:
    """One user's piece: its rounds, newest last (Undo drops the newest), and one request at a time."""

    def __init__(self, folder: pathlib.Path):
        self.folder = folder
        self.rounds: list[Round] = []
        self._busy = threading.Lock()
        self._stop = threading.Event()
        self._made = 0

    @property
    def current(self) -> Round | None:
        return self.rounds[-1] if self.rounds else None

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        """Holds the session for one request; a second one while it runs is refused in one line."""
        if not self._busy.acquire(blocking=False):
            raise UserError("still composing the last request: wait for it or press Stop")
        try:
            yield
        finally:
            self._stop.clear()
            self._busy.release()

    def stop(self) -> bool:
        """Asks the running request to stop at its next chunk of tokens; False when none runs."""
        if not self._busy.locked():
            return False
        self._stop.set()
        return True

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def new_folder(self) -> pathlib.Path:
        self._made += 1
        folder = self.folder / f"round_{self._made}"
        folder.mkdir(parents=True)
        return folder

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class Sessions:
    """Sessions by key (a browser session's id), the least recently used dropped beyond `capacity`."""

    def __init__(self, make: Callable[[], Session], capacity: int = 256):
        self._make, self._capacity = make, capacity
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Session:
        with self._lock:
            if key not in self._sessions:
                self._sessions[key] = self._make()
            self._sessions.move_to_end(key)
            while len(self._sessions) > self._capacity:
                self._sessions.popitem(last=False)[1].close()
            return self._sessions[key]

    def drop(self, key: str) -> None:
        with self._lock:
            session = self._sessions.pop(key, None)
        if session is not None:
            session.close()

    def values(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    def close(self) -> None:
        for key in list(self._sessions):
            self.drop(key)


Progress = Callable[[float, float], None]  # (seconds composed, seconds asked for)
Ready = Callable[[int, Continuation], None]  # (candidate index, its files ready)


class CoComposer:
    """The model of one run serving every session: compose, extend, undo, MIDI export."""

    def __init__(self, run: Run, media_root: pathlib.Path):
        self.run, self.tokenizer = run, run.tokenizer
        self.media_root = media_root
        self.critic = run.critic()
        self.render, self.no_audio_reason = renderer()
        self.piece_seconds = run.cfg.sample.piece_seconds or DEFAULT_PIECE_SECONDS
        self._samplers: OrderedDict[SampleConfig, Sampler] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def composers(self) -> tuple[str, ...]:
        return self.tokenizer.vocab.composers

    @property
    def critic_note(self) -> str:
        """Empty with a critic; else why there is no score."""
        if self.critic is not None:
            return ""
        return "no critic score: no critic was trained for this run (musenet-jax critic train)"

    def new_session(self) -> Session:
        return Session(pathlib.Path(tempfile.mkdtemp(prefix="session-", dir=self.media_root)))

    # --- what a session asks for -----------------------------------------------------------------

    def start_piece(
        self, settings: Settings, *, opening: str | None = None, upload: str | None = None
    ) -> Piece:
        """A new piece: the prefix of `settings`, then a named opening, an uploaded MIDI intro, or nothing.
        The intro's instruments join the chosen ones."""
        tokenizer = self.tokenizer
        tokenizer.vocab.composer_id(settings.composer)  # an unknown composer: one line naming the valid ones
        families = np.array([FAMILIES.index(n) for n in parse_instruments(list(settings.instruments))])
        body = np.zeros(0, np.int32)
        if opening is not None or upload is not None:
            try:
                body, intro_families = intro_events(tokenizer, opening_midi(opening) if opening else upload)
            except UserError as err:
                if upload is None:
                    raise
                # said with the file's name, not the server's temporary path
                raise UserError(str(err).replace(str(upload), pathlib.Path(upload).name)) from None
            families = np.union1d(families, intro_families)
        prefix = tokenizer.prefix(settings.composer, families)
        allowed = np.zeros(len(FAMILIES), bool)
        allowed[families] = True
        return Piece(np.concatenate([prefix, body]).astype(np.int32), len(prefix), allowed, settings.composer)

    def compose(
        self,
        session: Session,
        settings: Settings,
        *,
        opening: str | None = None,
        upload: str | None = None,
        progress: Progress | None = None,
        ready: Ready | None = None,
    ) -> Round:
        """Starts a new piece (the session's earlier rounds are dropped) and offers its first candidates."""
        with session.working():
            piece = self.start_piece(settings, opening=opening, upload=upload)
            offered = self._offer(session, piece, settings, progress, ready)
            for old in session.rounds:
                shutil.rmtree(old.folder, ignore_errors=True)
            session.rounds = [offered]
            return offered

    def extend(
        self,
        session: Session,
        chosen: int,
        settings: Settings,
        *,
        progress: Progress | None = None,
        ready: Ready | None = None,
    ) -> Round:
        """The piece grows by candidate `chosen` (0-based) and new candidates continue all of it."""
        with session.working():
            current = session.current
            if current is None:
                raise UserError("compose a piece first")
            if not 0 <= chosen < len(current.candidates):
                raise UserError(f"choose one of candidates 1 to {len(current.candidates)}")
            picked = current.candidates[chosen]
            grown = picked.becomes or dataclasses.replace(current.piece, ids=picked.ids)
            offered = self._offer(session, grown, settings, progress, ready)
            session.rounds.append(offered)
            return offered

    def undo(self, session: Session) -> Round:
        """Back to the round before: its piece and its candidates."""
        with session.working():
            if len(session.rounds) < 2:
                raise UserError("nothing to undo")
            shutil.rmtree(session.rounds.pop().folder, ignore_errors=True)
            return session.rounds[-1]

    @property
    def infill_note(self) -> str:
        """Empty for a model trained with anticipation; else the one line saying it cannot fill or add."""
        try:
            require_anticipation(self.tokenizer.vocab)
        except UserError as err:
            return str(err)
        return ""

    def fill(
        self,
        session: Session,
        start_s: float,
        end_s: float,
        settings: Settings,
        *,
        progress: Progress | None = None,
        ready: Ready | None = None,
    ) -> Round:
        """Candidates that rewrite the notes of the piece so far starting in [start_s, end_s), with the
        piece's instruments, knowing what comes after; everything else stays as it is."""
        with session.working():
            piece = self._piece_to_work_in(session)
            given = given_for_infill(self.tokenizer, self._midi(piece), start_s, end_s, "the piece so far")
            families = [FAMILIES[f] for f in piece.allowed.nonzero()[0]]
            request = anticipated_request(self.tokenizer, piece.composer, given, families, families)
            offered = self._offer_given(
                session, piece, given, request, piece.allowed, settings, "fill", (start_s, end_s), progress,
                ready,
            )  # fmt: skip
            session.rounds.append(offered)
            return offered

    def add_part(
        self,
        session: Session,
        families: Sequence[str],
        settings: Settings,
        *,
        progress: Progress | None = None,
        ready: Ready | None = None,
    ) -> Round:
        """Candidates that add parts of `families` (ones the piece does not play yet) to all of the piece
        so far, in time with it; its own notes stay as they are."""
        with session.working():
            piece = self._piece_to_work_in(session)
            if not families:
                raise UserError("choose the instruments of the part to add")
            playing = [FAMILIES[f] for f in np.unique(self.events(piece.ids).family)]
            already = [f for f in parse_instruments(list(families)) if f in playing]
            if already:
                raise UserError(
                    f"the piece already plays {', '.join(already)}; add a part it lacks (it plays "
                    f"{', '.join(playing)})"
                )
            given, new = given_for_accompaniment(self.tokenizer, self._midi(piece), list(families), "piece")
            allowed = piece.allowed.copy()
            allowed[[FAMILIES.index(f) for f in new]] = True
            present = [FAMILIES[f] for f in allowed.nonzero()[0]]
            request = anticipated_request(self.tokenizer, piece.composer, given, present, new)
            offered = self._offer_given(
                session, piece, given, request, allowed, settings, "add", (), progress, ready
            )
            session.rounds.append(offered)
            return offered

    def seconds(self, ids: np.ndarray) -> float:
        return duration_steps(ids, self.tokenizer.vocab) * self.tokenizer.step_s

    def events(self, ids: np.ndarray) -> Events:
        """The notes of a piece or candidate (notes held at its end closed there)."""
        return self.tokenizer.ids_to_events(ids)

    # --- one round ---------------------------------------------------------------------------------

    def _offer(
        self,
        session: Session,
        piece: Piece,
        settings: Settings,
        progress: Progress | None,
        ready: Ready | None,
    ) -> Round:
        """Samples `settings.num_candidates` continuations of `piece` and writes their files."""
        tokenizer, vocab = self.tokenizer, self.tokenizer.vocab
        start_steps = duration_steps(piece.ids, vocab)
        target = start_steps + max(1, round(settings.seconds / tokenizer.step_s))
        piece_steps = max(target, round(self.piece_seconds / tokenizer.step_s))
        request = Request(
            piece.ids,
            piece.prefix_length,
            target,
            piece_steps,
            piece.allowed,
            may_end=False,
            owed=piece.allowed,
        )
        budget = token_budget(settings.seconds, int(piece.allowed.sum()), self.run.cfg.sample.max_new_tokens)
        history = math.ceil((len(piece.ids) + budget) / HISTORY_BUCKET) * HISTORY_BUCKET
        start_s = start_steps * tokenizer.step_s

        def on_chunk(_: int, music_s: float) -> None:
            if session.stopping:
                raise Stopped("stopped")
            if progress is not None:
                progress(min(max(music_s - start_s, 0.0), settings.seconds), settings.seconds)

        sampled = self._sampler(settings).sample(
            [request] * settings.num_candidates,
            max_new_tokens=budget,
            seed=secrets.randbits(31),
            history=history,
            progress=on_chunk,
        )
        scores = None
        if self.critic is not None:
            scores = self.critic.score([c.ids for c in sampled])
        folder = session.new_folder()
        candidates = []
        for k, cand in enumerate(sampled):
            if session.stopping:
                shutil.rmtree(folder, ignore_errors=True)
                raise Stopped("stopped")
            made = self._continuation(folder, k, cand, start_s, None if scores is None else float(scores[k]))
            candidates.append(made)
            if ready is not None:
                ready(k, made)
        return self._round(folder, piece, tuple(candidates))

    def _piece_to_work_in(self, session: Session) -> Piece:
        require_anticipation(self.tokenizer.vocab)
        current = session.current
        if current is None:
            raise UserError("compose a piece first")
        if not len(self.events(current.piece.ids)):
            raise UserError("the piece so far has no notes: extend it first")
        return current.piece

    def _midi(self, piece: Piece):
        return self.tokenizer.decode(piece.ids)

    def _offer_given(
        self,
        session: Session,
        piece: Piece,
        given: Given,
        request: Request,
        allowed: np.ndarray,
        settings: Settings,
        label: str,
        marks: tuple[float, ...],
        progress: Progress | None,
        ready: Ready | None,
    ) -> Round:
        """Samples candidates for an anticipated `request` on `piece` and writes their files: each is the
        given notes plus its new ones, as a piece that can be extended."""
        tokenizer = self.tokenizer
        step = tokenizer.step_s
        seconds = (given.stop_step - given.start_step) * step
        budget = token_budget(seconds, int(request.families.sum()), self.run.cfg.sample.max_new_tokens)
        budget += len(request.forced)
        history = math.ceil((len(request.prompt) + budget) / HISTORY_BUCKET) * HISTORY_BUCKET
        begin_s = (given.start_step + tokenizer.vocab.anticipation_steps) * step

        def on_chunk(_: int, music_s: float) -> None:
            if session.stopping:
                raise Stopped("stopped")
            if progress is not None:
                progress(min(max(music_s - begin_s, 0.0), seconds), seconds)

        sampled = self._sampler(settings).sample(
            [request] * settings.num_candidates,
            max_new_tokens=budget,
            seed=secrets.randbits(31),
            history=history,
            progress=on_chunk,
        )
        news = [new_notes(tokenizer, c.ids, given.start_step) for c in sampled]
        wholes = [given_and_new(given.events, new) for new in news]
        pieces = [self._open_piece(whole, piece.composer, allowed) for whole in wholes]
        scores = None
        if self.critic is not None:
            scores = self.critic.score([p.ids for p in pieces])
        folder = session.new_folder()
        candidates = []
        start_s, end_s = given.start_step * step, given.stop_step * step
        for k, (cand, new, whole, grown) in enumerate(zip(sampled, news, wholes, pieces)):
            if session.stopping:
                shutil.rmtree(folder, ignore_errors=True)
                raise Stopped("stopped")
            stem = folder / f"candidate_{k + 1}"
            title = f"candidate {k + 1}: {len(new)} new notes, {start_s:.1f} s to {end_s:.1f} s"
            save_given_and_new(given.events, new, stem.with_suffix(".png"), marks=marks, title=title)
            with_new_notes(given.midi, new, label).dump(str(stem.with_suffix(".mid")))
            audio = None
            if self.render is not None:
                audio = stem.with_suffix(".wav")
                self.render(whole, audio)
            made = Continuation(
                grown.ids, start_s, end_s, None if scores is None else float(scores[k]), cand.stopped_by,
                len(whole), stem.with_suffix(".png"), stem.with_suffix(".mid"), audio, becomes=grown,
            )  # fmt: skip
            candidates.append(made)
            if ready is not None:
                ready(k, made)
        return self._round(folder, piece, tuple(candidates))

    def _open_piece(self, events: Events, composer: str, allowed: np.ndarray) -> Piece:
        """`events` as a piece to continue: the prefix of the `allowed` families, the notes, no `end`."""
        closed = self.tokenizer.events_to_ids(events, composer)
        prefix = self.tokenizer.prefix(composer, allowed.nonzero()[0])
        body = closed[self.tokenizer.prefix_length(closed) : -1]
        return Piece(np.concatenate([prefix, body]).astype(np.int32), len(prefix), allowed, composer)

    def _continuation(
        self, folder: pathlib.Path, k: int, cand: Candidate, start_s: float, score: float | None
    ) -> Continuation:
        ids = (
            cand.open_ids
        )  # kept open (no closing note-offs, trailing rests kept), so that it can be continued
        events = self.events(ids)
        end_s = self.seconds(ids)
        stem = folder / f"candidate_{k + 1}"
        save_pianoroll(
            self.tokenizer,
            ids,
            stem.with_suffix(".png"),
            prompt_seconds=start_s,
            title=f"candidate {k + 1}: {start_s:.1f} s to {end_s:.1f} s",
        )
        self.tokenizer.decode(ids).dump(str(stem.with_suffix(".mid")))
        audio = None
        if self.render is not None:
            audio = stem.with_suffix(".wav")
            self.render(_from(events, start_s), audio)
        return Continuation(
            ids, start_s, end_s, score, cand.stopped_by, len(events), stem.with_suffix(".png"),
            stem.with_suffix(".mid"), audio,
        )  # fmt: skip

    def _round(self, folder: pathlib.Path, piece: Piece, candidates: tuple[Continuation, ...]) -> Round:
        events = self.events(piece.ids)
        seconds = self.seconds(piece.ids)
        midi = folder / "piece.mid"
        self.tokenizer.decode(piece.ids).dump(str(midi))
        roll = audio = None
        if len(events):
            roll = folder / "piece.png"
            save_pianoroll(self.tokenizer, piece.ids, roll, title=f"the piece so far: {seconds:.1f} s")
            if self.render is not None:
                audio = folder / "piece.wav"
                self.render(events, audio)
        return Round(piece, candidates, folder, midi, roll, audio, seconds, len(events))

    def _sampler(self, settings: Settings) -> Sampler:
        """One compiled sampler per creativity setting, the least recently used dropped beyond a few."""
        key = dataclasses.replace(self.run.cfg.sample, temperature=settings.temperature, top_p=settings.top_p)
        with self._lock:
            if key not in self._samplers:
                self._samplers[key] = self.run.sampler(key)
            self._samplers.move_to_end(key)
            while len(self._samplers) > SAMPLERS_KEPT:
                self._samplers.popitem(last=False)
            return self._samplers[key]


def _from(events: Events, start_s: float) -> Events:
    """The music from `start_s` on, moved to start at 0; notes held across `start_s` sound from 0."""
    later = events.select(events.end_s > start_s)
    return later.replace(start_s=np.maximum(later.start_s, start_s) - start_s, end_s=later.end_s - start_s)
