"""`musenet-jax decode`: token JSON files (from `encode` or `generate`) -> MIDI files.

`X.json` becomes `OUT/X.mid`. A file of that name that decode (or generate) did not write is never
replaced: the command stops in one line before writing anything (the original `X.mid` beside its `X.json`
stays the original). Files are written beside and moved in when all are decoded (`outputs.py`)."""

from __future__ import annotations

import argparse
import json
import pathlib

from musenet_jax.cli.common import add_config_arguments, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("decode", help="decode token JSON files to .mid files")
    add_config_arguments(parser)
    parser.add_argument("jsons", nargs="+", metavar="JSON", help='files with an "ids" list')
    parser.add_argument(
        "-o", "--out", required=True, help="output folder for the .mid files (never over files of yours)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from musenet_jax.encoding.tokenizer import Tokenizer
    from musenet_jax.errors import UserError
    from musenet_jax.outputs import naming, refuse_to_overwrite, staged_into

    tokenizer = Tokenizer(config_from_args(args).encoding)
    out = pathlib.Path(args.out)
    paths = [pathlib.Path(name) for name in args.jsons]
    names = [f"{path.stem}.mid" for path in paths]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UserError(f"two inputs would both be decoded to {out / twice[0]}; decode them into separate -o")
    out.mkdir(parents=True, exist_ok=True)
    refuse_to_overwrite(out, names, "-o")
    with staged_into(out, "decode", "-o") as staging, naming(out):
        for path, name in zip(paths, names):
            try:
                ids = np.asarray(json.loads(path.read_text())["ids"], dtype=np.int64)
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise UserError(
                    f"{path}: not a token JSON with an 'ids' list ({type(err).__name__})"
                ) from None
            bad = ids[(ids < 0) | (ids >= tokenizer.vocab.size)]
            if len(bad):
                raise UserError(
                    f"{path}: id {int(bad[0])} is outside the vocabulary (size {tokenizer.vocab.size})"
                )
            tokenizer.decode(ids).dump(str(staging / name))
    print(f"decoded {len(paths)} files into {out}/")
    return 0
