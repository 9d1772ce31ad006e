"""`musenet-jax eval`: bits per token on a split and musical statistics of samples vs that split."""

from __future__ import annotations

import argparse

from musenet_jax.cli.common import add_run_arguments, run_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="held-out bits/token (by token kind) and sample vs split statistics"
    )
    add_run_arguments(parser)
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument(
        "--num-samples", type=int, help="samples for the statistics; 0 = none (default: sample.num_samples)"
    )
    parser.add_argument("--max-pieces", type=int, help="evaluate only the first N pieces of the split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from musenet_jax.app.evaluate import evaluate
    from musenet_jax.eval.report import format_table

    report = evaluate(
        run_from_args(args),
        split=args.split,
        num_samples=args.num_samples,
        max_pieces=args.max_pieces,
        seed=args.seed,
        show_progress=not args.json,
    )
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0
