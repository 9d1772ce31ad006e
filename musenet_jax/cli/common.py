"""Arguments and helpers shared by the subcommands.

Flags that set a config value are overrides: each command names its flags' config keys in one table
(`FlagKeys`), and `flag_overrides` turns the flags given into `section.key=value` items placed after
the `--set` ones, so a flag always wins and the library only ever sees a `Config`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING

from musenet_jax.config import Config, bundled_config_names, load_config

if TYPE_CHECKING:
    from musenet_jax.app.run import Run

FlagKeys = Mapping[str, str]  # argparse dest -> "section.key"


def add_config_arguments(parser: argparse.ArgumentParser, default: str = "tiny") -> None:
    """`--config NAME|PATH` and repeated `--set section.key=value`, the same on every command."""
    parser.add_argument(
        "--config",
        default=default,
        metavar="NAME|PATH",
        help=f"bundled config ({', '.join(bundled_config_names())}) or a YAML file (default: {default})",
    )
    add_set_argument(parser)


def add_set_argument(parser: argparse.ArgumentParser, example: str = "model.d_model=256") -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help=f"override one config value, e.g. --set {example} (repeatable)",
    )


def flag_overrides(args: argparse.Namespace, flags: FlagKeys | None = None) -> list[str]:
    """The `--set` overrides, then one `section.key=value` per flag that was given."""
    flags = flags or {}
    given = [
        f"{key}={getattr(args, dest)}" for dest, key in flags.items() if getattr(args, dest, None) is not None
    ]
    return list(getattr(args, "overrides", [])) + given


def config_from_args(args: argparse.Namespace, flags: FlagKeys | None = None) -> Config:
    return load_config(args.config, flag_overrides(args, flags))


CHECKPOINT_HELP = (
    "a training run's work dir, an exported bundle dir (`musenet-jax export`), hf://ORG/NAME[@REVISION] "
    "(a bundle on the Hugging Face Hub, cached after the first download) or a gs:// path of a run or bundle "
    "(default: the bundled model)"
)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """`--checkpoint SOURCE`, `--step`, `--data-dir` and `--set` for commands that use a trained model."""
    parser.add_argument("--checkpoint", metavar="SOURCE", help=CHECKPOINT_HELP)
    parser.add_argument(
        "--step", default="latest", help="checkpoint step: a number, latest or best (default: latest)"
    )
    parser.add_argument("--data-dir", help="TFDS data_dir of the dataset (default: the run's data.data_dir)")
    add_set_argument(parser, example="sample.temperature=0.9; only data.*, sample.* and critic.*")


RUN_FLAGS: FlagKeys = {"data_dir": "data.data_dir"}


def run_from_args(args: argparse.Namespace, flags: FlagKeys | None = None) -> Run:
    """Loads the run named by `add_run_arguments`' flags, with the flag and `--set` overrides applied."""
    from musenet_jax.app.run import load_run  # here: commands that need no model start without JAX

    return load_run(
        args.checkpoint, args.step, overrides=flag_overrides(args, {**RUN_FLAGS, **(flags or {})})
    )
