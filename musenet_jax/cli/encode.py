"""`musenet-jax encode`: MIDI files or folders -> one JSON of token ids and strings per file."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import TYPE_CHECKING

from musenet_jax.cli.common import add_config_arguments, config_from_args

if TYPE_CHECKING:  # the CLI imports the tokenizer only when a command runs
    from musenet_jax.encoding.tokenizer import NotesRead, Tokenizer


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("encode", help="encode MIDI files (or folders of them) to token JSON")
    add_config_arguments(parser)
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="MIDI files or folders (searched recursively)"
    )
    parser.add_argument("-o", "--out", default="encoded", help="output folder (default: encoded)")
    parser.add_argument("--composer", default=None, help="composer token for the prefix (default: unknown)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from musenet_jax.encoding.config import describe_cut
    from musenet_jax.encoding.files import midi_files
    from musenet_jax.encoding.midi_io import shown
    from musenet_jax.encoding.tokenizer import Tokenizer
    from musenet_jax.outputs import naming, refuse_to_overwrite, staged_into

    cfg = config_from_args(args)
    tokenizer = Tokenizer(cfg.encoding)
    tokenizer.vocab.composer_id(args.composer)  # an unknown composer fails before any work
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = midi_files(args.paths, say=lambda line: print(f"musenet-jax encode: {line}", file=sys.stderr))
    records, failed, notes_cut = {}, [], 0
    used_names: set[str] = set()
    for path in files:
        read = _read_or_say_why_not(tokenizer, path)
        if read is None:
            failed.append(path)
            continue
        notes_cut += read.cut_notes
        ids = tokenizer.events_to_ids(read.events, args.composer)
        name = _unique_name(path.stem, used_names)
        record = {
            "source": shown(path),
            "composer": args.composer or "unknown",
            "ids": ids.tolist(),
            "tokens": tokenizer.to_strings(ids),
        }
        records[f"{name}.json"] = record
    # Written beside and moved in; a file of the user's (a JSON beside its MIDI) is never replaced.
    refuse_to_overwrite(out, records, "-o")
    if records:
        with staged_into(out, "encode", "-o") as staging, naming(out):
            for name, record in records.items():
                (staging / name).write_text(json.dumps(record))
    written = len(records)
    line = f"encoded {written} of {len(files)} files into {shown(out)}/"
    if cfg.encoding.max_seconds is not None:
        line += f"; pieces {describe_cut(cfg.encoding.max_seconds)}: {notes_cut} notes cut"
    if failed:
        line += f"; skipped {len(failed)}: {', '.join(shown(p) for p in failed)}"
    print(line)
    return 1 if failed else 0


def _read_or_say_why_not(tokenizer: Tokenizer, path: pathlib.Path) -> NotesRead | None:
    """The notes of one file, saying on stderr what a cut removed; None, with the reason said, for a file
    that cannot be read or that the cut empties (so the other files still get encoded)."""
    from musenet_jax.encoding.midi_io import MidiReadError, shown

    try:
        read = tokenizer.read_notes(path)
    except MidiReadError as err:
        print(f"musenet-jax encode: skipped {err}", file=sys.stderr)
        return None
    cut = f"encoding.max_seconds={tokenizer.cfg.max_seconds:g} s" if read.cut_notes else ""
    if read.cut_notes and not len(read.events):
        print(
            f"musenet-jax encode: skipped {shown(path)}: all {read.cut_notes} notes start after {cut}; "
            "nothing left to encode",
            file=sys.stderr,
        )
        return None
    if read.cut_notes:
        print(
            f"musenet-jax encode: {shown(path)}: cut {read.cut_notes} of "
            f"{read.cut_notes + len(read.events)} notes that start after {cut}",
            file=sys.stderr,
        )
    return read


def _unique_name(stem: str, used: set[str]) -> str:
    name, n = stem, 1
    while name in used:
        name, n = f"{stem}_{n}", n + 1
    used.add(name)
    return name
