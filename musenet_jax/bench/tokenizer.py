"""Tokenizer throughput: our MuseNet encoding vs MidiTok's REMI on the same MIDI files, in one run."""

from __future__ import annotations

import argparse
import json
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="MIDI files or folders")
    parser.add_argument("--repeat", type=int, default=3, help="passes over the files; the best is kept")
    parser.add_argument("--json", action="store_true", help="one JSON object per tokenizer")


def _best_pass(encode, files, repeat: int) -> tuple[float, int]:
    best, tokens = float("inf"), 0
    for _ in range(repeat):
        start = time.perf_counter()
        tokens = sum(encode(path) for path in files)
        best = min(best, time.perf_counter() - start)
    return best, tokens


def run(args: argparse.Namespace) -> int:
    from musenet_jax.encoding.files import midi_files
    from musenet_jax.encoding.midi_io import MidiReadError
    from musenet_jax.encoding.tokenizer import Tokenizer
    from musenet_jax.errors import UserError

    try:
        import miditok
    except ImportError:
        raise UserError(
            "the tokenizer bench compares with MidiTok: pip install 'musenet-jax[bench]'"
        ) from None
    tokenizer = Tokenizer()
    files = []
    n_notes = 0
    for path in midi_files(args.paths):
        try:
            n_notes += len(tokenizer.midi_to_events(path))
            files.append(path)
        except MidiReadError as err:
            print(f"skipped {err}")
    if not files:
        raise UserError("no readable MIDI files given")
    remi = miditok.REMI(miditok.TokenizerConfig(use_programs=True, one_token_stream_for_programs=True))
    contenders = {
        "musenet_jax": lambda p: len(tokenizer.encode(p)),
        "miditok_remi": lambda p: sum(len(seq) for seq in _as_list(remi.encode(p))),
    }
    rows = []
    for name, encode in contenders.items():
        seconds, tokens = _best_pass(encode, files, args.repeat)
        rows.append(
            {
                "tokenizer": name,
                "files": len(files),
                "notes": n_notes,
                "tokens": tokens,
                "seconds": seconds,
                "files_per_s": len(files) / seconds,
                "notes_per_s": n_notes / seconds,
                "tokens_per_s": tokens / seconds,
            }
        )
    ratio = rows[0]["notes_per_s"] / rows[1]["notes_per_s"]
    if args.json:
        for row in rows:
            print(json.dumps({**row, "speedup_vs_miditok": ratio}))
        return 0
    print(f"{'tokenizer':<14}{'files/s':>10}{'notes/s':>12}{'tokens/s':>12}")
    for row in rows:
        print(
            f"{row['tokenizer']:<14}{row['files_per_s']:>10.1f}{row['notes_per_s']:>12.0f}{row['tokens_per_s']:>12.0f}"
        )
    print(
        f"musenet_jax / miditok notes/s: {ratio:.2f}x  "
        f"({len(files)} files, {n_notes} notes, best of {args.repeat})"
    )
    return 0


def _as_list(encoded) -> list:
    return encoded if isinstance(encoded, list) else [encoded]
