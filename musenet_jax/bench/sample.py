"""Sampling: per-token time of KV-cache decoding (the last `--steps` tokens decoded inside one jitted loop, as
the sampler does) vs re-running the full forward for one token, at one context length."""

from __future__ import annotations

import argparse
import json
import statistics
import time

from musenet_jax.cli.common import add_config_arguments
from musenet_jax.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, default="small")
    parser.add_argument("--context", type=int, default=2048, help="sequence length the token is sampled at")
    parser.add_argument("--batch", type=int, default=1, help="sequences decoded together")
    parser.add_argument("--steps", type=int, default=32, help="timed decode steps per round")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternations of full forwards and decode steps"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object")


def run(args: argparse.Namespace) -> int:
    import jax
    import numpy as np
    from flax import nnx

    from musenet_jax.cli.common import config_from_args
    from musenet_jax.encoding.vocab import Vocabulary
    from musenet_jax.model.transformer import build_model

    if min(args.context, args.batch, args.steps, args.rounds) < 1 or args.steps >= args.context:
        raise UserError("--context, --batch, --steps, --rounds must be >= 1 and --steps < --context")
    cfg = config_from_args(args, {"context": "model.context"})
    vocab = Vocabulary(cfg.encoding)
    vocab_size = vocab.size
    model = build_model(cfg.model, vocab)
    graphdef, params = nnx.split(model)
    rng = np.random.default_rng(0)
    b, t = args.batch, args.context
    tokens = rng.integers(3, vocab_size, (b, t), dtype=np.int32)
    times = np.cumsum(rng.integers(0, 3, (b, t)), axis=1, dtype=np.int32)
    durations = times[:, -1] + 1

    @jax.jit
    def full_forward(params, tokens, times, durations):  # what a sampler without a cache runs per token
        return nnx.merge(graphdef, params)(tokens, times, durations)[:, -1]

    prompt = t - args.steps

    @jax.jit
    def prefill(params, tokens, times, durations):
        model = nnx.merge(graphdef, params)
        return model.prefill(tokens[:, :prompt], times[:, :prompt], durations, model.init_cache(b, t))[1]

    @jax.jit
    def decode_all(
        params, cache, tokens, times, durations
    ):  # the sampler's loop: steps inside one jitted call
        def step(pos, carry):  # the parameters ride in the carry: NNX merges them at the loop's trace level
            params, cache = carry
            model = nnx.merge(graphdef, params)
            return params, model.decode_step(tokens[:, pos], times[:, pos], durations, cache)[1]

        cache = jax.lax.fori_loop(prompt, t - 1, step, (params, cache))[1]
        return nnx.merge(graphdef, params).decode_step(tokens[:, t - 1], times[:, t - 1], durations, cache)[0]

    def time_full() -> float:
        start = time.perf_counter()
        for _ in range(2):
            jax.block_until_ready(full_forward(params, tokens, times, durations))
        return (time.perf_counter() - start) / 2

    def time_cached() -> float:
        cache = jax.block_until_ready(prefill(params, tokens, times, durations))
        start = time.perf_counter()
        jax.block_until_ready(decode_all(params, cache, tokens, times, durations))
        return (time.perf_counter() - start) / args.steps

    time_full(), time_cached()  # compile both
    full_s, cached_s = [], []
    for _ in range(args.rounds):
        full_s.append(time_full())
        cached_s.append(time_cached())
    full, cached = statistics.median(full_s), statistics.median(cached_s)
    result = {
        "device": jax.devices()[0].device_kind,
        "config": cfg.name,
        "context": t,
        "batch": b,
        "full_forward_ms_per_token": full * 1e3,
        "kv_cache_ms_per_token": cached * 1e3,
        "speedup": full / cached,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{cfg.name} at context {t}, batch {b} on {result['device']}: full forward "
            f"{result['full_forward_ms_per_token']:.2f} ms/token, "
            f"KV cache {result['kv_cache_ms_per_token']:.2f} ms/token -> {result['speedup']:.1f}x"
        )
    return 0
