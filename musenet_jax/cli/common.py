"""Arguments and helpers shared by the subcommands."""

from __future__ import annotations

import argparse

from musenet_jax.config import Config, bundled_config_names, load_config


def add_config_arguments(parser: argparse.ArgumentParser, default: str = "tiny") -> None:
    """`--config NAME|PATH` and repeated `--set section.key=value`, the same on every command."""
    parser.add_argument(
        "--config",
        default=default,
        metavar="NAME|PATH",
        help=f"bundled config ({', '.join(bundled_config_names())}) or a YAML file (default: {default})",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set model.d_model=256 (repeatable)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)
