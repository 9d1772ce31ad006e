"""`musenet-jax encode`: MIDI files or folders -> one JSON of token ids and strings per file."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from musenet_jax.cli.common import add_config_arguments, config_from_args

MIDI_SUFFIXES = (".mid", ".midi", ".MID", ".MIDI")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("encode", help="encode MIDI files (or folders of them) to token JSON")
    add_config_arguments(parser)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="MIDI files or folders (searched recursively)")
    parser.add_argument("-o", "--out", default="encoded", help="output folder (default: encoded)")
    parser.add_argument("--composer", default=None, help="composer token for the prefix (default: unknown)")
    parser.set_defaults(run=run)


def midi_files(paths: list[str]) -> list[pathlib.Path]:
    """Files as given, folders expanded to the MIDI files below them, in a stable order."""
    from musenet_jax.errors import UserError

    found: list[pathlib.Path] = []
    for name in paths:
        path = pathlib.Path(name)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix in MIDI_SUFFIXES and p.is_file())
        elif path.exists():
            found.append(path)
        else:
            raise UserError(f"{path}: no such file or folder")
    return found


def run(args: argparse.Namespace) -> int:
    from musenet_jax.encoding.midi_io import MidiReadError
    from musenet_jax.encoding.tokenizer import Tokenizer

    cfg = config_from_args(args)
    tokenizer = Tokenizer(cfg.encoding)
    tokenizer.vocab.composer_id(args.composer)  # an unknown composer fails before any work
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = midi_files(args.paths)
    written, failed = 0, []
    used_names: set[str] = set()
    for path in files:
        try:
            ids = tokenizer.encode(path, composer=args.composer)
        except MidiReadError as err:
            print(f"musenet-jax encode: skipped {err}", file=sys.stderr)
            failed.append(path)
            continue
        name = _unique_name(path.stem, used_names)
        record = {"source": str(path), "composer": args.composer or "unknown",
                  "ids": ids.tolist(), "tokens": tokenizer.to_strings(ids)}
        (out / f"{name}.json").write_text(json.dumps(record))
        written += 1
    print(f"encoded {written} of {len(files)} files into {out}/" + (f"; skipped {len(failed)}" if failed else ""))
    return 1 if failed or not files else 0


def _unique_name(stem: str, used: set[str]) -> str:
    name, n = stem, 1
    while name in used:
        name, n = f"{stem}_{n}", n + 1
    used.add(name)
    return name
