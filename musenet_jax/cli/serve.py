"""`musenet-jax serve`: MuseNet's co-composer as a local web app."""

from __future__ import annotations

import argparse
import errno
import importlib.util
import pathlib
import socket
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


def check_can_listen(host: str, port: int) -> None:
    """Binds HOST:PORT once and lets it go, so that a bad port, a busy one or a host that is not this
    machine's is one line before the model loads (and before a URL is printed that would not answer)."""
    if not 1 <= port <= 65535:
        raise UserError(f"--port must be in 1..65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise UserError(
            f"cannot resolve --host {host} ({err.strerror}); give a name or address of this machine, "
            "e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
        ) from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server binds
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise UserError(
                    f"port {port} on {host} is in use by another program; try another --port"
                ) from None
            raise UserError(
                f"cannot bind --host {host} port {port} ({err.strerror}); give an address of this machine, "
                "e.g. 127.0.0.1 or 0.0.0.0, and a port you may use (1024 and above need no privileges)"
            ) from None


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise UserError(f"serve needs Gradio: {DEMO_INSTALL}")
    if args.concurrency < 1:
        raise UserError(f"--concurrency must be at least 1, got {args.concurrency}")
    check_can_listen(args.host, args.port)
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
