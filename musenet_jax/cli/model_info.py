"""`musenet-jax model-info`: parameter count, FLOPs per token and attention density per layer of a config."""

from __future__ import annotations

import argparse
import json

from musenet_jax.cli.common import add_config_arguments, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "model-info", help="parameter count, FLOPs per token, attention density per layer"
    )
    add_config_arguments(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from musenet_jax.encoding.vocab import Vocabulary
    from musenet_jax.model.info import model_info

    cfg = config_from_args(args)
    info = model_info(cfg.model, Vocabulary(cfg.encoding))
    if args.json:
        print(json.dumps(info.to_dict()))
        return 0
    m = cfg.model
    print(
        f"{args.config}: {m.n_layers} layers, d_model {m.d_model}, {m.n_heads} heads, context {m.context}, "
        f"vocab {info.vocab_size}, attention {m.attention} ({m.pattern_layout} {', '.join(m.patterns)})"
    )
    print(f"parameters          {info.parameters:,} ({info.parameters / 1e6:.1f} M)")
    print(f"train FLOPs/token   {info.train_flops_per_token:.4g} (forward + backward)")
    print(f"{'layer':>5}  {'patterns':<28} {'allowed':>8} {'computed':>9}")
    for row in info.layers:
        print(
            f"{row.layer:>5}  {' | '.join(row.patterns):<28} "
            f"{row.pattern_density:>8.2%} {row.layout_density:>9.2%}"
        )
    return 0
