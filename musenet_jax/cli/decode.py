"""`musenet-jax decode`: token JSON files (from `encode` or `generate`) -> MIDI files."""

from __future__ import annotations

import argparse
import json
import pathlib

from musenet_jax.cli.common import add_config_arguments, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("decode", help="decode token JSON files to .mid files")
    add_config_arguments(parser)
    parser.add_argument("jsons", nargs="+", metavar="JSON", help='files with an "ids" list')
    parser.add_argument("-o", "--out", required=True, help="output folder for the .mid files")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from musenet_jax.encoding.tokenizer import Tokenizer
    from musenet_jax.errors import UserError

    tokenizer = Tokenizer(config_from_args(args).encoding)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.jsons:
        path = pathlib.Path(name)
        try:
            ids = np.asarray(json.loads(path.read_text())["ids"], dtype=np.int64)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(f"{path}: not a token JSON with an 'ids' list ({type(err).__name__})") from None
        bad = ids[(ids < 0) | (ids >= tokenizer.vocab.size)]
        if len(bad):
            raise UserError(
                f"{path}: id {int(bad[0])} is outside the vocabulary (size {tokenizer.vocab.size})"
            )
        tokenizer.decode(ids).dump(str(out / f"{path.stem}.mid"))
    print(f"decoded {len(args.jsons)} files into {out}/")
    return 0
