"""`musenet-jax plot`: a run's training and validation curves as a PNG."""

from __future__ import annotations

import argparse
import pathlib


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plot", help="training loss and validation bits/token of a run as a PNG")
    parser.add_argument("workdir", metavar="WORKDIR", help="a `musenet-jax train` workdir")
    parser.add_argument("-o", "--out", help="PNG to write (default: WORKDIR/training_curve.png)")
    parser.add_argument("--title", help="plot title (default: the workdir's name)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from musenet_jax.train.plot import plot_training_curve

    out = args.out or str(pathlib.Path(args.workdir) / "training_curve.png")
    last = plot_training_curve(args.workdir, out, title=args.title)
    val = "" if last["val_bits"] is None else f", validation {last['val_bits']:.3f}"
    print(f"wrote {out} (step {last['step']}: train {last['train_bits']:.3f} bits/token{val})")
    return 0
