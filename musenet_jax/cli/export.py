"""`musenet-jax export`: a run (or bundle) -> a self-contained inference bundle, optionally on the Hub."""

from __future__ import annotations

import argparse

from musenet_jax.cli.common import add_run_arguments, run_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a self-contained inference bundle (safetensors, config, vocabulary, critic, model card)",
        description=(
            "Writes OUT/model.safetensors, config.json, vocab.json, note_facts.json, critic/ (when trained), "
            "bundle.json and a model card README.md. Every --checkpoint accepts the result, and so does "
            "train --init-from. --set sample.* values become the bundle's sampling defaults."
        ),
    )
    add_run_arguments(parser)
    parser.add_argument("--out", required=True, help="bundle folder (new, empty, or an earlier bundle)")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="stored parameter dtype; bfloat16 halves the size (default: float32)",
    )
    parser.add_argument(
        "--eval-json", metavar="FILE", help="`musenet-jax eval --json` output for the model card"
    )
    parser.add_argument("--name", help="model name in the card (default: the --out folder's name)")
    parser.add_argument(
        "--push-to-hub", metavar="ORG/NAME", help="also upload the bundle to this Hugging Face Hub repository"
    )
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from musenet_jax.app.export import export_bundle, push_to_hub, read_eval_report

    eval_report = read_eval_report(args.eval_json) if args.eval_json else None
    name = args.name or (args.push_to_hub.split("/")[-1] if args.push_to_hub else None)
    report = export_bundle(
        run_from_args(args), args.out, dtype=args.dtype, eval_report=eval_report, name=name
    )
    print(report.describe())
    if args.push_to_hub:
        url = push_to_hub(args.out, args.push_to_hub, private=args.private)
        print(f"pushed to {url}; load it with --checkpoint hf://{args.push_to_hub}")
    return 0
