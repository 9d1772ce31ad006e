"""`musenet-jax plot`: a run's training and validation curves as a PNG, or several runs' validation
curves against wall-clock time (recipes compared at equal budget)."""

from __future__ import annotations

import argparse

from etils import epath


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="training curves of a run as a PNG; with several runs, their validation against wall time",
    )
    parser.add_argument(
        "workdirs",
        metavar="WORKDIR",
        nargs="+",
        help="`musenet-jax train` workdirs: one gives its loss and validation curves against the step; "
        "several give one validation line each against wall-clock minutes",
    )
    parser.add_argument(
        "-o", "--out", help="PNG to write (default: WORKDIR/training_curve.png, or recipes.png for several)"
    )
    parser.add_argument("--title", help="plot title (default: the workdir's name)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from musenet_jax.train.plot import plot_training_curve, plot_validation_against_time

    if len(args.workdirs) > 1:
        out = args.out or "recipes.png"
        last = plot_validation_against_time(args.workdirs, out, title=args.title)
        print(f"wrote {out}: " + ", ".join(f"{name} {bits:.3f}" for name, bits in last.items()))
        return 0
    workdir = args.workdirs[0]
    out = args.out or str(epath.Path(workdir) / "training_curve.png")
    last = plot_training_curve(workdir, out, title=args.title)
    val = "" if last["val_bits"] is None else f", validation {last['val_bits']:.3f}"
    print(f"wrote {out} (step {last['step']}: train {last['train_bits']:.3f} bits/token{val})")
    return 0
