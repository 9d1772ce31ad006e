"""`musenet-jax vocab`: the vocabulary size and its groups, as every checkpoint and dataset records them."""

from __future__ import annotations

import argparse
import json

from musenet_jax.cli.common import add_config_arguments, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("vocab", help="print the vocabulary size, its groups and fingerprint")
    add_config_arguments(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    parser.add_argument("--tokens", action="store_true", help="also list every token string")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from musenet_jax.encoding.vocab import Vocabulary

    vocab = Vocabulary(config_from_args(args).encoding)
    report = {
        "size": vocab.size,
        "groups": vocab.groups(),
        "composers": list(vocab.composers),
        "instruments": list(vocab.families),
        "fingerprint": vocab.fingerprint(),
    }
    if args.tokens:
        report["tokens"] = list(vocab.strings)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"vocabulary size {vocab.size} (fingerprint {report['fingerprint'][:16]})")
    for name, count in report["groups"].items():
        print(f"  {name:<11} {count:>6}")
    print(f"composers:   {', '.join(vocab.composers)}")
    print(f"instruments: {', '.join(vocab.families)}")
    if args.tokens:
        print("\n".join(f"{i:>6} {s}" for i, s in enumerate(vocab.strings)))
    return 0
