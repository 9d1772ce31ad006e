"""`musenet-jax`: one entry point, a thin layer over the library API.

Each subcommand lives in its own module under `musenet_jax.cli` exposing `register(subparsers)`;
those modules import JAX only inside their `run`, so `musenet-jax encode ...` starts quickly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from musenet_jax import __version__
from musenet_jax.errors import UserError
from musenet_jax.platform import default_to_cpu_without_accelerators

# Subcommand modules, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "vocab",
    "encode",
    "decode",
    "prepare",
    "train",
    "plot",
    "bench",
    "model_info",
    "compile",
    "generate",
    "critic",
    "eval",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="musenet-jax",
        description="MuseNet in JAX: encode MIDI, prepare TFDS shards, train, generate, score and evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"musenet-jax {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"musenet_jax.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one subcommand; user errors become one line on stderr and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    default_to_cpu_without_accelerators(os.environ)  # before any command imports JAX
    try:
        return int(args.run(args) or 0)
    except UserError as err:
        print(f"musenet-jax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"musenet-jax {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
