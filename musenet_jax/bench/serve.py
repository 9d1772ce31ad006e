"""The co-composer served: time to first audio and to all candidates, for one user and for users at once.

Starts `serve`'s app in this process on a free local port and asks it through Gradio's client, as a
browser would: the queue, the worker thread, the files and their transfer are all in the times. The
first request compiles the sampler and is reported apart (`cold`); then one user alone, then `--users`
users at once (each its own session).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import socket
import tempfile
import threading
import time

from musenet_jax.cli.common import CHECKPOINT_HELP, add_set_argument, flag_overrides
from musenet_jax.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="SOURCE", help=CHECKPOINT_HELP)
    parser.add_argument("--step", default="latest", help="checkpoint step (default: latest)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per candidate (default: 20)")
    parser.add_argument("--candidates", type=int, default=4, help="candidates per request (default: 4)")
    parser.add_argument("--users", type=int, default=2, help="users asking at once (default: 2)")
    parser.add_argument("--composer", default="bach", help="composer token (default: bach)")
    parser.add_argument("--instruments", default="piano", help="comma-separated families (default: piano)")
    parser.add_argument("--concurrency", type=int, default=2, help="the server's --concurrency (default: 2)")
    add_set_argument(parser, example="sample.top_k=40; only data.*, sample.* and critic.*")
    parser.add_argument("--json", action="store_true", help="one JSON object")


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise UserError("bench serve needs Gradio: pip install 'musenet-jax[demo]'")
    if min(args.candidates, args.users, args.concurrency) < 1 or args.seconds <= 0:
        raise UserError("--seconds, --candidates, --users and --concurrency must be positive")
    import jax

    from musenet_jax.app.co_composer import CoComposer
    from musenet_jax.app.run import load_run
    from musenet_jax.app.web import CoComposerApp

    checkpoint = args.checkpoint or "the bundled model"
    run_ = load_run(args.checkpoint, args.step, overrides=flag_overrides(args))
    with tempfile.TemporaryDirectory(prefix="musenet-bench-serve-") as media:
        app = CoComposerApp(CoComposer(run_, pathlib.Path(media)), concurrency=args.concurrency)
        url = app.launch("127.0.0.1", free_port(), block=False)
        try:
            request = compose_request(args, run_.cfg.sample)
            cold = timed_compose(url, request)
            alone = timed_compose(url, request)
            together = at_once(url, request, args.users)
        finally:
            app.close()
    result = {
        "device": jax.devices()[0].device_kind,
        "checkpoint": str(checkpoint),
        "step": run_.step,
        "seconds": args.seconds,
        "candidates": args.candidates,
        "concurrency": args.concurrency,
        "audio": app.composer.render is not None,
        "cold": cold,
        "one_user": alone,
        "users_at_once": together,
    }
    if args.json:
        print(json.dumps(result))
    else:
        what = "audio" if result["audio"] else "candidate (no FluidSynth: no audio)"
        print(
            f"{args.candidates} candidates of {args.seconds:g} s on {result['device']} "
            f"({checkpoint}, step {run_.step}); first {what} / all candidates:"
        )
        print(f"  first request (compiles): {describe(cold)}")
        print(f"  one user:                 {describe(alone)}")
        for k, times in enumerate(together):
            print(f"  {args.users} users at once, user {k + 1}: {describe(times)}")
    return 0


def describe(times: dict[str, float]) -> str:
    return f"{times['first_s']:.2f} s / {times['total_s']:.2f} s"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def compose_request(args: argparse.Namespace, sample_cfg) -> tuple:
    """The compose endpoint's inputs, in the page's order."""
    instruments = [n.strip() for n in args.instruments.split(",") if n.strip()]
    return (args.composer, instruments, "none", None, args.seconds, sample_cfg.temperature, sample_cfg.top_p,
            args.candidates)  # fmt: skip


def timed_compose(url: str, request: tuple) -> dict[str, float]:
    """Seconds from asking to the first candidate the page can play, and to the whole round."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    start = time.perf_counter()
    job = client.submit(*request, api_name="/compose")
    first = None
    for outputs in job:
        summary = outputs[0]
        if first is None and isinstance(summary, dict) and summary.get("candidates"):
            first = time.perf_counter() - start
    job.result()
    total = time.perf_counter() - start
    return {"first_s": total if first is None else first, "total_s": total}


def at_once(url: str, request: tuple, users: int) -> list[dict[str, float]]:
    """`users` clients composing at the same moment, each in its own session."""
    results: list[dict[str, float] | BaseException] = [{}] * users
    go = threading.Barrier(users)

    def one(k: int) -> None:
        try:
            go.wait()
            results[k] = timed_compose(url, request)
        except BaseException as err:  # said by the caller's thread
            results[k] = err

    threads = [threading.Thread(target=one, args=(k,)) for k in range(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]
