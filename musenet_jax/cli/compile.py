"""`musenet-jax compile`: ahead-of-time compile of the train step for a TPU topology, no TPU needed."""

from __future__ import annotations

import argparse
import json
import re

from musenet_jax.cli.common import add_config_arguments, flag_overrides
from musenet_jax.config import load_config
from musenet_jax.errors import UserError, unknown_choice

MESH_AXES = ("data", "fsdp", "tensor")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compile", help="AOT-compile the train step for a TPU topology: memory per device, FLOPs per step"
    )
    add_config_arguments(parser)
    parser.add_argument("--topology", required=True, help="TPU slice, e.g. v5p:4x4x4, v5e:4x4, v4:2x2x1")
    parser.add_argument("--batch", type=int, default=None, help="global batch (default: train.global_batch)")
    parser.add_argument(
        "--mesh",
        default=None,
        metavar="data=N,fsdp=N,tensor=N",
        help="mesh axis sizes (default: the config's mesh.*; one may be -1 = the rest)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    parser.set_defaults(run=run)


def parse_mesh(text: str) -> list[str]:
    """'data=1,fsdp=-1' -> ['mesh.data=1', 'mesh.fsdp=-1']; axes not named keep the config's size."""
    sizes: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        axis, sep, value = item.partition("=")
        if axis not in MESH_AXES:
            raise unknown_choice("mesh axis", axis, MESH_AXES)
        if not sep or not re.fullmatch(r"-?\d+", value.strip()):
            raise UserError(f"--mesh {item!r}: expected {axis}=INTEGER")
        sizes[axis] = int(value)
    return [f"mesh.{axis}={size}" for axis, size in sizes.items()]


def _gib(n: float) -> str:
    return f"{n / (1 << 30):8.2f} GiB"


def run(args: argparse.Namespace) -> int:
    from musenet_jax.train.compile import compile_train_step

    if args.batch is not None and args.batch < 1:
        raise UserError(f"--batch {args.batch}: must be at least 1")
    overrides = flag_overrides(args, {"batch": "train.global_batch"}) + parse_mesh(args.mesh or "")
    cfg = load_config(args.config, overrides)
    report = compile_train_step(cfg, args.topology)
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0
    mesh = ", ".join(f"{k}={v}" for k, v in report.mesh.items())
    print(
        f"{report.config} train step on {report.topology} ({report.num_devices} x {report.device_kind}), "
        f"mesh ({mesh}), global batch {report.global_batch} x {report.context} tokens"
        f"{f' in {report.grad_accum_steps} microbatches' if report.grad_accum_steps > 1 else ''}, "
        f"attention {report.attention}, {report.parameters / 1e6:,.1f} M parameters"
    )
    print(f"lowered in {report.lower_s:.1f} s, compiled in {report.compile_s:.1f} s")
    print("memory per device")
    print(f"  arguments     {_gib(report.argument_bytes)}")
    print(
        f"  outputs       {_gib(report.output_bytes)} "
        f"({_gib(report.alias_bytes).strip()} aliased to donated arguments)"
    )
    print(f"  temporaries   {_gib(report.temp_bytes)}")
    print(f"  code          {_gib(report.generated_code_bytes)}")
    print(
        f"  total         {_gib(report.per_device_total_bytes)} of {_gib(report.hbm_bytes).strip()} HBM "
        f"({report.per_device_total_bytes / report.hbm_bytes:.0%}) -> "
        f"{'fits' if report.fits else 'DOES NOT FIT'}"
    )
    print(f"FLOPs per step  {report.flops_per_step:.4g} ({report.flops_source})")
    print(
        f"XLA cost_analysis {report.xla_flops_per_device:.4g} FLOPs per device "
        "(counts each scanned body once)"
    )
    return 0
