"""`musenet-jax prepare`: MIDI corpus -> tokenized TFDS ArrayRecord shards, in parallel, with a summary."""

from __future__ import annotations

import argparse
import json

from musenet_jax.cli.common import add_config_arguments, config_from_args
from musenet_jax.errors import UserError

SOURCES = (
    "music21",
    "midi_dir",
    "maestro_v3",
    "lakh_full",
)  # the builder's configs (not imported: TFDS is slow)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="build the musenet_midi TFDS dataset from music21's corpus, a MIDI folder, MAESTRO or Lakh",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--source",
        choices=SOURCES,
        default=None,
        help="music21 (the embedded corpus), midi_dir (your folder), maestro_v3 or lakh_full (standard "
        "corpora, their upstream splits kept) (default: data.source of the config)",
    )
    parser.add_argument(
        "--manual-dir",
        "--midi-dir",
        dest="midi_dir",
        metavar="DIR",
        default=None,
        help="midi_dir: the folder of MIDI files (first-level sub-folders name composers); maestro_v3 and "
        "lakh_full: the folder holding the archive as downloaded or it extracted (without it, the archive "
        "is downloaded into DATA_DIR/downloads)",
    )
    parser.add_argument(
        "--data-dir", default=None, help="TFDS data dir (default: data.data_dir of the config)"
    )
    parser.add_argument("--limit", type=int, default=None, help="use only the first N input files")
    parser.add_argument("--workers", type=int, default=None, help="conversion processes (default: all cores)")
    parser.add_argument(
        "--file-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="skip (and report) an input file whose conversion takes longer (default: no limit)",
    )
    parser.add_argument(
        "--beam-options",
        default=None,
        metavar="FLAGS",
        help='convert with Apache Beam instead of local processes, e.g. "--runner=DirectRunner" '
        "or Dataflow flags (needs the beam extra)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="rebuild even when a dataset from the same input (compared by content) is already there",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(run=run)


def _stop(signum: int, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM as Ctrl-C: workers stopped, the unfinished build removed, exit 130


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import signal

    from musenet_jax.data.prepare import prepare

    signal.signal(signal.SIGTERM, _stop)
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1 (how many input files to use), got {args.limit}")
    if args.file_timeout is not None and not 0 < args.file_timeout < float("inf"):  # NaN too
        raise UserError(f"--file-timeout must be a positive number of seconds, got {args.file_timeout}")
    cfg = config_from_args(args)
    summary = prepare(
        args.source or cfg.data.source,
        args.data_dir or cfg.data.data_dir,
        cfg.encoding,
        midi_dir=args.midi_dir or cfg.data.midi_dir or None,
        limit=args.limit,
        workers=args.workers,
        file_timeout_s=args.file_timeout,
        show_progress=not args.json,
        beam_options=args.beam_options,
        force=args.force,
    )
    print(json.dumps(dataclasses.asdict(summary)) if args.json else summary.describe())
    return 0
