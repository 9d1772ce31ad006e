"""`musenet-jax bench NAME`: benchmarks that measure ours and a baseline side by side in one run."""

from __future__ import annotations

import argparse
import importlib

# Each is a module musenet_jax.bench.<name> with `add_arguments(parser)` and `run(args) -> int`.
BENCH_MODULES: tuple[str, ...] = ("tokenizer", "attention", "train", "data", "sample", "serve", "device")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks: ours vs a baseline, ratios measured in one run")
    benches = parser.add_subparsers(dest="bench", metavar="NAME", required=True)
    for name in BENCH_MODULES:
        module = importlib.import_module(f"musenet_jax.bench.{name}")
        sub = benches.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
