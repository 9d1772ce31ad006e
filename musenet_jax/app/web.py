"""The co-composer's web page (Gradio Blocks) over `co_composer.CoComposer`.

Requests go through Gradio's queue, so generation runs off the request thread; each browser session has
its own `Session` (its piece and rounds), found by Gradio's session id. Composing runs in a worker thread
that reports seconds composed and each candidate as soon as its files are written; the page shows both
as they come. Stop (or leaving the page) stops the worker at its next chunk of tokens. A user error is a
one-line message in the page, never a traceback, and the server keeps serving. "Fill a span" and "Add a
part" work inside the piece so far with a model trained with anticipation; with any other model the page
says in one line that it cannot, and so do the two buttons when pressed.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gradio as gr

from musenet_jax.app.co_composer import (
    MAX_CANDIDATES,
    MAX_CONTINUATION_SECONDS,
    CoComposer,
    Continuation,
    Round,
    Sessions,
    Settings,
    Stopped,
)
from musenet_jax.app.generate import rare_pairing
from musenet_jax.app.openings import OPENINGS
from musenet_jax.encoding.families import FAMILIES
from musenet_jax.errors import UserError

NO_INTRO = "none"
UPLOADED = "uploaded MIDI"
MAX_UPLOAD = "5mb"


@dataclasses.dataclass(frozen=True)
class CandidateSlot:
    """The components that show one candidate."""

    box: gr.Group
    title: gr.Markdown
    audio: gr.Audio
    roll: gr.Image
    midi: gr.DownloadButton

    def components(self) -> list[gr.components.Component | gr.Group]:
        return [self.box, self.title, self.audio, self.roll, self.midi]


@dataclasses.dataclass(frozen=True)
class _Progress:
    composed_s: float
    total_s: float


@dataclasses.dataclass(frozen=True)
class _Ready:
    index: int
    candidate: Continuation


@dataclasses.dataclass(frozen=True)
class _Finished:
    result: Round | None
    error: BaseException | None


class CoComposerApp:
    """The page, its sessions and its queue; `launch` serves it."""

    def __init__(self, composer: CoComposer, *, concurrency: int = 2):
        self.composer = composer
        self.sessions = Sessions(composer.new_session)
        self.concurrency = concurrency
        self.blocks = self._build()

    def launch(self, host: str, port: int, *, block: bool = True) -> str:
        """Serves the page; returns its URL (with `block=False`, at once, the server in a thread)."""
        self.blocks.queue(default_concurrency_limit=self.concurrency)
        _, url, _ = self.blocks.launch(
            server_name=host,
            server_port=port,
            prevent_thread_lock=not block,
            max_file_size=MAX_UPLOAD,
            ssr_mode=False,
            quiet=not block,
        )
        return url

    def close(self) -> None:
        self.blocks.close()
        self.sessions.close()

    # --- the page -------------------------------------------------------------------------------

    def _build(self) -> gr.Blocks:
        composer = self.composer
        sc = composer.run.cfg.sample
        with gr.Blocks(title="MuseNet co-composer", analytics_enabled=False) as blocks:
            gr.Markdown(
                "# MuseNet co-composer\nPick a style, instruments and an intro; choose among the "
                "candidates, extend the piece with the one you like, again and again; download it as MIDI."
            )
            for line in (composer.no_audio_reason, composer.critic_note):
                gr.Markdown(line, visible=bool(line))
            with gr.Row():
                with gr.Column(scale=1, min_width=280):
                    style = gr.Dropdown(
                        list(composer.composers), value=composer.composers[0], label="Composer"
                    )
                    instruments = gr.CheckboxGroup(
                        list(FAMILIES), value=["piano"], label="Instruments", elem_id="instruments"
                    )
                    intro = gr.Dropdown([NO_INTRO, *OPENINGS, UPLOADED], value=NO_INTRO, label="Intro")
                    upload = gr.File(label="MIDI intro", file_types=[".mid", ".midi"], type="filepath")
                    seconds = gr.Slider(
                        1, MAX_CONTINUATION_SECONDS, value=20, step=1, label="Seconds per continuation"
                    )
                    temperature = gr.Slider(
                        0, 2, value=sc.temperature, step=0.05, label="Temperature (creativity)"
                    )
                    top_p = gr.Slider(0.05, 1, value=sc.top_p, step=0.01, label="Top-p")
                    count = gr.Slider(1, MAX_CANDIDATES, value=4, step=1, label="Candidates")
                    with gr.Row():
                        compose = gr.Button("Compose", variant="primary")
                        stop = gr.Button("Stop", variant="stop")
                with gr.Column(scale=2):
                    status = gr.Markdown("Ready.", elem_id="status")
                    piece_md = gr.Markdown("", elem_id="piece")
                    piece_roll = gr.Image(label="The piece so far", type="filepath", visible=False)
                    piece_audio = gr.Audio(
                        label="The piece so far", type="filepath", format="wav", visible=False
                    )
                    with gr.Row():
                        chosen = gr.Radio([], label="Chosen candidate", elem_id="chosen")
                        extend = gr.Button("Extend", variant="primary")
                        undo = gr.Button("Undo")
                        download = gr.DownloadButton(
                            "Download piece (MIDI)", visible=False, elem_id="download"
                        )
                    with gr.Accordion("Work inside the piece", open=True):
                        gr.Markdown(
                            composer.infill_note, visible=bool(composer.infill_note), elem_id="infill-note"
                        )
                        with gr.Row():
                            fill_start = gr.Number(0, label="Fill from (s)", minimum=0, elem_id="fill-start")
                            fill_end = gr.Number(4, label="Fill to (s)", minimum=0, elem_id="fill-end")
                            fill = gr.Button("Fill span")
                        with gr.Row():
                            parts = gr.CheckboxGroup(list(FAMILIES), label="Parts to add", elem_id="parts")
                            add_part = gr.Button("Add part")
                    slots = [self._slot(k) for k in range(MAX_CANDIDATES)]
                    with gr.Accordion("Details", open=False):
                        summary = gr.JSON(label="Round", elem_id="summary")
            self._outputs = [summary, status, piece_md, piece_roll, piece_audio, download, chosen]
            self._slots = slots
            outputs = self._outputs + [c for slot in slots for c in slot.components()]

            upload.upload(lambda: UPLOADED, outputs=intro, api_visibility="private")
            intro.change(self._composer_of, inputs=[intro, style], outputs=style, api_visibility="private")
            compose_event = compose.click(
                self._compose,
                inputs=[style, instruments, intro, upload, seconds, temperature, top_p, count],
                outputs=outputs,
                api_name="compose",
                show_progress_on=[status],
            )
            extend_event = extend.click(
                self._extend,
                inputs=[chosen, seconds, temperature, top_p, count],
                outputs=outputs,
                api_name="extend",
                show_progress_on=[status],
            )
            fill_event = fill.click(
                self._fill,
                inputs=[fill_start, fill_end, temperature, top_p, count],
                outputs=outputs,
                api_name="fill",
                show_progress_on=[status],
            )
            add_event = add_part.click(
                self._add_part,
                inputs=[parts, temperature, top_p, count],
                outputs=outputs,
                api_name="add_part",
                show_progress_on=[status],
            )
            undo.click(self._undo, outputs=outputs, api_name="undo")
            stop.click(
                self._stop,
                outputs=status,
                cancels=[compose_event, extend_event, fill_event, add_event],
                api_name="stop",
            )
            blocks.unload(self._leave)
        return blocks

    @staticmethod
    def _slot(k: int) -> CandidateSlot:
        with gr.Group(visible=False, elem_id=f"candidate-{k + 1}") as box:
            title = gr.Markdown(f"### Candidate {k + 1}")
            audio = gr.Audio(label=f"Candidate {k + 1}", type="filepath", format="wav")
            roll = gr.Image(label=f"Candidate {k + 1}: piano roll", type="filepath")
            midi = gr.DownloadButton(f"Candidate {k + 1} (MIDI)", size="sm")
        return CandidateSlot(box, title, audio, roll, midi)

    # --- handlers ---------------------------------------------------------------------------------

    def _compose(
        self,
        composer,
        instruments,
        intro,
        upload,
        seconds,
        temperature,
        top_p,
        count,
        request: gr.Request,
        progress=gr.Progress(),
    ):  # noqa: E501
        """New piece: prefix, intro, first candidates."""
        with _one_line():
            if intro == UPLOADED and not upload:
                raise UserError("upload a MIDI file for the intro, or choose another intro")
            settings = Settings(composer, tuple(instruments or ()), float(seconds), float(temperature),
                                float(top_p), int(count))  # fmt: skip
        session = self.sessions.get(request.session_hash)
        opening = intro if intro in OPENINGS else None
        file = upload if intro == UPLOADED else None
        yield from self._run(
            session,
            lambda report, ready: self.composer.compose(
                session, settings, opening=opening, upload=file, progress=report, ready=ready
            ),
            settings,
            progress,
            note=self._pairing_note(settings.composer, settings.instruments),
        )

    def _extend(
        self, chosen, seconds, temperature, top_p, count, request: gr.Request, progress=gr.Progress()
    ):
        """The piece grows by the chosen candidate; new candidates continue it."""
        session = self.sessions.get(request.session_hash)
        with _one_line():
            if session.current is None:
                raise UserError("compose a piece first")
            if chosen is None:
                raise UserError("choose a candidate to extend the piece with")
            piece = session.current.piece
            families = tuple(FAMILIES[i] for i in piece.allowed.nonzero()[0])
            settings = Settings(piece.composer, families, float(seconds), float(temperature), float(top_p),
                                int(count))  # fmt: skip
        yield from self._run(
            session,
            lambda report, ready: self.composer.extend(
                session, int(chosen) - 1, settings, progress=report, ready=ready
            ),
            settings,
            progress,
        )

    def _fill(self, start, end, temperature, top_p, count, request: gr.Request, progress=gr.Progress()):
        """Candidates that rewrite the notes of the piece so far starting in [start, end) seconds."""
        session = self.sessions.get(request.session_hash)
        with _one_line():
            settings = self._inside_settings(session, temperature, top_p, count)
            start, end = float(start or 0), float(end or 0)
        yield from self._run(
            session,
            lambda report, ready: self.composer.fill(
                session, start, end, settings, progress=report, ready=ready
            ),
            settings,
            progress,
            heading=f"Filling {start:g} s to {end:g} s: {settings.num_candidates} candidates...",
        )

    def _add_part(self, parts, temperature, top_p, count, request: gr.Request, progress=gr.Progress()):
        """Candidates that add parts of the chosen families to all of the piece so far."""
        session = self.sessions.get(request.session_hash)
        with _one_line():
            settings = self._inside_settings(session, temperature, top_p, count)
        chosen = list(parts or ())
        yield from self._run(
            session,
            lambda report, ready: self.composer.add_part(
                session, chosen, settings, progress=report, ready=ready
            ),
            settings,
            progress,
            heading=f"Adding {', '.join(chosen) or 'nothing'}: {settings.num_candidates} candidates...",
            note=self._pairing_note(settings.composer, chosen),
        )

    def _pairing_note(self, composer: str, families: Sequence[str]) -> str | None:
        """`generate`'s line on a pairing the training data rarely or never shows, for the page."""
        return rare_pairing(self.composer.run, composer, [name for name in families if name in FAMILIES])

    def _inside_settings(self, session, temperature, top_p, count) -> Settings:
        """The settings of a fill or an added part (the piece's own composer and instruments); a model
        without anticipation or a session without a piece is refused here in one line."""
        if self.composer.infill_note:
            raise UserError(self.composer.infill_note)
        if session.current is None:
            raise UserError("compose a piece first")
        piece = session.current.piece
        families = tuple(FAMILIES[i] for i in piece.allowed.nonzero()[0])
        return Settings(piece.composer, families, MAX_CONTINUATION_SECONDS, float(temperature),
                        float(top_p), int(count))  # fmt: skip

    def _undo(self, request: gr.Request) -> dict:
        session = self.sessions.get(request.session_hash)
        with _one_line():
            back = self.composer.undo(session)
        return self._view(back, "Back one step.")

    def _stop(self, request: gr.Request) -> str:
        stopped = self.sessions.get(request.session_hash).stop()
        return "Stopped." if stopped else "Nothing to stop."

    def _leave(self, request: gr.Request) -> None:
        self.sessions.drop(request.session_hash)

    @staticmethod
    def _composer_of(intro: str, current: str) -> str:
        """Choosing a named opening picks its composer (the user may change it again)."""
        return OPENINGS[intro].composer if intro in OPENINGS else current

    # --- streaming one request ----------------------------------------------------------------------

    def _run(
        self,
        session,
        work: Callable[[Callable[[float, float], None], Callable[[int, Continuation], None]], Round],
        settings: Settings,
        progress: gr.Progress,
        heading: str | None = None,
        note: str | None = None,
    ) -> Iterator[dict]:
        """Runs `work` in a worker thread; yields page updates as it reports: seconds composed, each
        candidate once its files exist, then the whole round. Leaving early (Stop, a closed page)
        stops the worker."""
        events: queue.Queue = queue.Queue()

        def target() -> None:
            try:
                result = work(
                    lambda done, total: events.put(_Progress(done, total)),
                    lambda k, cand: events.put(_Ready(k, cand)),
                )
                events.put(_Finished(result, None))
            except BaseException as err:  # handed to the request thread, which says it
                events.put(_Finished(None, err))

        threading.Thread(target=target, daemon=True, name="co-composer").start()
        n = settings.num_candidates
        shown: list[dict] = []
        finished = False
        try:
            heading = heading or f"Composing {n} candidates of {settings.seconds:.0f} s..."
            yield {self._outputs[1]: heading, **self._hide_slots()}
            while True:
                event = events.get()
                if isinstance(event, _Progress):
                    progress((event.composed_s, event.total_s), desc="seconds composed", unit="s")
                    yield {self._outputs[1]: f"Composing: {event.composed_s:.1f} of {event.total_s:.0f} s"}
                elif isinstance(event, _Ready):
                    shown.append(self._candidate_summary(event.index, event.candidate))
                    yield {
                        self._outputs[0]: {"candidates": shown},
                        self._outputs[1]: f"Candidate {event.index + 1} of {n} ready.",
                        **self._slot_update(event.index, event.candidate),
                    }
                else:
                    finished = True
                    if isinstance(event.error, Stopped):
                        yield {self._outputs[1]: "Stopped."}
                        return
                    if event.error is not None:
                        with _one_line():
                            raise event.error
                    done = "Choose a candidate, then Extend; or Compose anew."
                    yield self._view(event.result, done if note is None else f"{done}\n\n{note}")
                    return
        finally:
            if not finished:
                session.stop()

    # --- what the page shows --------------------------------------------------------------------------

    def _hide_slots(self) -> dict:
        return {slot.box: gr.update(visible=False) for slot in self._slots}

    def _slot_update(self, k: int, cand: Continuation) -> dict:
        slot = self._slots[k]
        return {
            slot.box: gr.update(visible=True),
            slot.title: f"### Candidate {k + 1}\n{self._describe(cand)}",
            slot.audio: gr.update(
                value=str(cand.audio) if cand.audio else None, visible=cand.audio is not None
            ),
            slot.roll: str(cand.roll),
            slot.midi: str(cand.midi),
        }

    def _describe(self, cand: Continuation) -> str:
        score = (
            "critic: no score (no critic trained)"
            if cand.critic_score is None
            else f"critic: P(real) {cand.critic_score:.2f}"
        )
        ending = {"end": ", the model ended the piece here", "budget": ", its token budget ran out"}
        span = f"{cand.start_s:.1f} s to {cand.end_s:.1f} s, {cand.notes} notes"
        return f"{span}; {score}{ending.get(cand.stopped_by, '')}"

    def _candidate_summary(self, k: int, cand: Continuation) -> dict[str, Any]:
        return {
            "candidate": k + 1,
            "start_s": round(cand.start_s, 3),
            "end_s": round(cand.end_s, 3),
            "notes": cand.notes,
            "critic_score": cand.critic_score,
            "stopped_by": cand.stopped_by,
            "audio": cand.audio is not None,
        }

    def _view(self, shown: Round, message: str) -> dict:
        summary, status, piece_md, piece_roll, piece_audio, download, chosen = self._outputs
        n = len(shown.candidates)
        update = {
            summary: {
                "piece_seconds": round(shown.seconds, 3),
                "piece_notes": shown.notes,
                "candidates": [self._candidate_summary(k, c) for k, c in enumerate(shown.candidates)],
            },
            status: message,
            piece_md: f"**The piece so far:** {shown.seconds:.1f} s, {shown.notes} notes "
            f"({shown.piece.composer})",
            piece_roll: gr.update(
                value=str(shown.roll) if shown.roll else None, visible=shown.roll is not None
            ),
            piece_audio: gr.update(
                value=str(shown.audio) if shown.audio else None, visible=shown.audio is not None
            ),
            download: gr.update(value=str(shown.midi), visible=True),
            chosen: gr.update(choices=[(f"Candidate {k + 1}", k + 1) for k in range(n)], value=None),
        }
        for k, slot in enumerate(self._slots):
            if k < n:
                update.update(self._slot_update(k, shown.candidates[k]))
            else:
                update[slot.box] = gr.update(visible=False)
        return update


class _one_line:
    """Turns a `UserError` into Gradio's one-line message in the page (no traceback, here or there)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, _tb) -> bool:
        if isinstance(err, UserError):
            raise gr.Error(str(err).splitlines()[0], print_exception=False) from None
        return False
