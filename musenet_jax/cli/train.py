"""`musenet-jax train`: train (or resume) a model from TFDS shards into a work directory."""

from __future__ import annotations

import argparse

from musenet_jax.cli.common import FlagKeys, add_config_arguments, config_from_args
from musenet_jax.errors import UserError

FLAGS: FlagKeys = {
    "data_dir": "data.data_dir",
    "checkpoint_every": "train.checkpoint_every",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model; rerunning with the same --workdir resumes from its latest checkpoint",
        description=(
            "Trains on the prepared musenet_midi shards. Checkpoints go to WORKDIR/checkpoints, metrics to "
            "WORKDIR/metrics.jsonl and WORKDIR/tb. SIGTERM or Ctrl-C saves a checkpoint and exits; rerun "
            "the same command to resume exactly where it stopped."
        ),
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--data-dir", help="TFDS data_dir holding musenet_midi (default: the config's data.data_dir)"
    )
    parser.add_argument(
        "--workdir", required=True, help="directory for checkpoints, config.json, metrics and tb/"
    )
    parser.add_argument("--steps", type=int, help="train until this step (default: train.steps)")
    parser.add_argument(
        "--step",
        help="resume from this saved step (a number or best; default: the latest "
        "readable one); later steps are moved to WORKDIR/set_aside",
    )
    parser.add_argument(
        "--init-from",
        metavar="SOURCE",
        help="start a new run from these parameters (fresh optimizer, step 0): a run, a bundle, "
        "hf://ORG/NAME[@REVISION], gs://..., or `bundled`; the architecture must match --config's. "
        "Composer labels the new dataset adds start from the base's `unknown` (train.init_from); the rest "
        "of the encoding must be the base's. Ignored when WORKDIR already has "
        "checkpoints (the run resumes)",
    )
    parser.add_argument(
        "--checkpoint-every", type=int, metavar="K", help="save every K steps (train.checkpoint_every)"
    )
    dist = parser.add_argument_group("multi-process (one program per host)")
    dist.add_argument(
        "--coordinator", metavar="HOST:PORT", help="address of process 0 (local multi-process runs)"
    )
    dist.add_argument("--num-processes", type=int, help="number of processes taking part")
    dist.add_argument("--process-id", type=int, help="this process's index in [0, num-processes)")
    dist.add_argument(
        "--multihost",
        action="store_true",
        help="join the other hosts through the cluster's own environment (Cloud TPU pod, SLURM)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from musenet_jax.train.distributed import DistributedSpec, initialize

    initialize(DistributedSpec(args.coordinator, args.num_processes, args.process_id, args.multihost))
    if args.steps is not None and args.steps < 0:
        raise UserError("--steps must not be negative")
    cfg = config_from_args(args, FLAGS)

    from musenet_jax.train.checkpoint import has_checkpoints
    from musenet_jax.train.loop import train

    init_params = None
    source = args.init_from or cfg.train.init_from
    if source and has_checkpoints(args.workdir):  # the base is not read again: it may be gone by now
        print(f"resuming {args.workdir}: the initial parameters are for a new run only")
    elif source:
        from musenet_jax.app.init_from import initial_params

        init_params = initial_params(source, cfg)
        print(f"starting from the parameters of {init_params.origin} (step {init_params.step})")
    summary = train(cfg, args.workdir, steps=args.steps, resume_step=args.step, init_params=init_params)
    print(summary.describe())
    return summary.exit_status
