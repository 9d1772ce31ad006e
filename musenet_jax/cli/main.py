"""`musenet-jax`: one entry point, a thin layer over the library API.

Each subcommand lives in its own module under `musenet_jax.cli` exposing `register(subparsers)`;
those modules import JAX only inside their `run`, so `musenet-jax encode ...` starts quickly.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Sequence

from musenet_jax import __version__
from musenet_jax.errors import UserError
from musenet_jax.platform import backend_failure, default_to_cpu_without_accelerators
from musenet_jax.storage import bucket_support_missing

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
    "export",
    "serve",
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


# What to do about an OS error, by errno: the message names the path, this says the way out.
_OS_ERROR_HINTS: dict[int, str] = {
    errno.ENOSPC: "free some space there or choose another location",
    errno.EDQUOT: "free some space there or choose another location",
    errno.EACCES: "make it writable or choose another location",
    errno.EPERM: "make it writable or choose another location",
    errno.EROFS: "the file system is read-only; choose another location",
    errno.EFBIG: "the file is larger than allowed there (ulimit -f?); choose another location",
    errno.ENOTDIR: "a file stands where a folder is needed; choose another location",
}


def describe_os_error(err: OSError) -> str:
    """One line: the path, the system's message and, for the common cases, what to do."""
    where = " -> ".join(str(p) for p in (err.filename, err.filename2) if p is not None)
    text = err.strerror or str(err)
    line = f"{where}: {text}" if where else text
    hint = _OS_ERROR_HINTS.get(err.errno or 0)
    return f"{line}; {hint}" if hint else line


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one subcommand; user errors and OS errors (disk full, permissions) become one line on stderr
    and exit code 2. Any other exception keeps its traceback: that is a bug to report."""
    parser = build_parser()
    args = parser.parse_args(argv)
    default_to_cpu_without_accelerators(os.environ)  # before any command imports JAX
    try:
        return int(args.run(args) or 0)
    except UserError as err:
        print(f"musenet-jax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if os.environ.get("MUSENET_DEBUG") == "1":
            raise
        print(f"musenet-jax {args.command}: error: {describe_os_error(err)}", file=sys.stderr)
        return 2
    except ImportError as err:
        missing = bucket_support_missing(err)
        if missing is None:
            raise
        print(f"musenet-jax {args.command}: error: {missing}", file=sys.stderr)
        return 2
    except (AssertionError, RuntimeError) as err:
        line = backend_failure(err, os.environ)
        if line is None:
            raise
        print(f"musenet-jax {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"musenet-jax {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
