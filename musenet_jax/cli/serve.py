"""`musenet-jax serve`: MuseNet's co-composer as a local web app."""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import tempfile
import threading

from musenet_jax.cli.common import CHECKPOINT_HELP, add_set_argument, flag_overrides
from musenet_jax.errors import UserError

DEMO_INSTALL = "pip install 'musenet-jax[demo]'"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="the co-composer web app: candidates to choose from, extend, undo, download MIDI",
        description=(
            "Serves MuseNet's co-composer on HOST:PORT (open it in a browser). Pick a composer, "
            "instruments and an intro (none, a named opening from music21's corpus, or your MIDI file); "
            "Compose offers N candidate continuations, each with audio (FluidSynth), a piano roll and "
            "the critic's score; Extend grows the piece by the chosen one and offers N more continuing "
            "all of it; Undo steps back; Download gives the piece as MIDI. Requests queue; each browser "
            "has its own piece. Needs the demo extra: " + DEMO_INSTALL + "."
        ),
    )
    parser.add_argument("--checkpoint", metavar="SOURCE", help=CHECKPOINT_HELP)
    parser.add_argument(
        "--step", default="latest", help="checkpoint step: a number, latest or best (default: latest)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default: 7860)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=2,
        help="requests composed at once, the others wait in the queue (default: 2)",
    )
    add_set_argument(parser, example="sample.top_k=40; only data.*, sample.* and critic.*")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise UserError(f"serve needs Gradio: {DEMO_INSTALL}")
    if args.concurrency < 1:
        raise UserError(f"--concurrency must be at least 1, got {args.concurrency}")
    from musenet_jax.app.co_composer import CoComposer
    from musenet_jax.app.openings import prepare_openings
    from musenet_jax.app.run import load_run
    from musenet_jax.app.web import CoComposerApp

    run_ = load_run(args.checkpoint, args.step, overrides=flag_overrides(args))
    threading.Thread(target=prepare_openings, daemon=True, name="openings").start()
    with tempfile.TemporaryDirectory(prefix="musenet-serve-") as media:
        app = CoComposerApp(CoComposer(run_, pathlib.Path(media)), concurrency=args.concurrency)
        print(
            f"co-composer on {args.checkpoint or 'the bundled model'} (step {run_.step}) at http://{args.host}:{args.port}",
            flush=True,
        )
        try:
            app.launch(args.host, args.port)
        finally:
            app.close()
    return 0
