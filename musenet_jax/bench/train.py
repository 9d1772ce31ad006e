"""Train step throughput: tokens/s and MFU against the device's matmul peak, measured side by side."""

from __future__ import annotations

import argparse
import json
import statistics
import time

from musenet_jax.cli.common import add_config_arguments
from musenet_jax.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, default="small")
    parser.add_argument("--batch", type=int, default=None, help="global batch (default: train.global_batch)")
    parser.add_argument("--steps", type=int, default=5, help="timed train steps after one compile step")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of steps and peak matmul")
    parser.add_argument("--json", action="store_true", help="one JSON object")


def synthetic_batch(cfg, vocab_size: int, seed: int = 0) -> dict:
    """Random tokens in the pipeline's batch layout: the step's cost does not depend on the music."""
    import numpy as np

    from musenet_jax.encoding.slots import note_slots
    from musenet_jax.encoding.vocab import Vocabulary

    rng = np.random.default_rng(seed)
    b, t = cfg.train.global_batch, cfg.model.context
    tokens = rng.integers(1, vocab_size, (b, t + 1), dtype=np.int32)
    times = np.cumsum(rng.integers(0, 20, (b, t)), axis=1, dtype=np.int32)
    return {
        "inputs": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "loss_mask": np.ones((b, t), np.float32),
        "times": times,
        "durations": times[:, -1] + 1,
        "sounding_head": np.zeros((b, note_slots(Vocabulary(cfg.encoding)).count), np.int32),
    }


def measure_train_step(cfg, *, steps: int, rounds: int) -> dict:
    """One config's train step on synthetic tokens: the best of `rounds` rounds of `steps` steps (after a
    compile step), tokens/s and MFU against the data-sheet peak (or, on a CPU, a measured matmul)."""
    import jax

    from musenet_jax.hardware import data_sheet_peak, measure_matmul_flops
    from musenet_jax.model.info import flops_per_token
    from musenet_jax.model.sharding import make_mesh
    from musenet_jax.train.setup import make_train_setup
    from musenet_jax.train.step import make_train_step

    setup = make_train_setup(cfg, make_mesh(cfg.mesh))
    vocab_size = setup.vocab_size
    state = setup.init_state()
    step = make_train_step(setup)
    batch = jax.device_put(synthetic_batch(cfg, vocab_size), setup.batch_sharding)
    state, metrics = step(state, batch)  # compile
    jax.block_until_ready(metrics)

    # Steps and the peak matmul alternate, so that both see the same machine (other work on a shared
    # host slows both); the best round of each is kept.
    device = jax.local_devices()[0]
    sheet = data_sheet_peak(getattr(device, "device_kind", ""))
    step_s, peaks = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        step_s.append((time.perf_counter() - start) / steps)
        if sheet is None:
            peaks.append(measure_matmul_flops(device))
    device_peak = sheet if sheet is not None else max(peaks)
    # CPU "devices" share their host's cores: one matmul already measures the whole host.
    peak = device_peak * (jax.device_count() if sheet is not None else jax.process_count())
    seconds = min(step_s)
    tokens = cfg.train.global_batch * cfg.model.context
    per_token = flops_per_token(cfg.model, vocab_size)
    return {
        "config": cfg.name,
        "devices": jax.device_count(),
        "platform": device.platform,
        "global_batch": cfg.train.global_batch,
        "context": cfg.model.context,
        "attention": cfg.model.attention,
        "dtype": cfg.model.dtype,
        "remat_policy": cfg.model.remat_policy,
        "step_ms": seconds * 1e3,
        "step_ms_median": statistics.median(step_s) * 1e3,
        "tokens_per_s": tokens / seconds,
        "model_flops_per_token": per_token,
        "achieved_flops": tokens * per_token / seconds,
        "peak_flops": peak,
        "peak_source": "data sheet" if sheet is not None else "measured fp32 matmul",
        "mfu": tokens * per_token / seconds / peak,
        "loss": float(metrics["loss"]),
    }


def run(args: argparse.Namespace) -> int:
    from musenet_jax.cli.common import config_from_args

    if args.steps < 1 or args.rounds < 1 or (args.batch is not None and args.batch < 1):
        raise UserError("--steps, --rounds and --batch must be at least 1")
    cfg = config_from_args(args, {"batch": "train.global_batch"})
    report = measure_train_step(cfg, steps=args.steps, rounds=args.rounds)
    peak = report["peak_flops"]
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"{cfg.name}: batch {report['global_batch']} x {report['context']}, {cfg.model.dtype}, "
        f"attention {cfg.model.attention}, remat {cfg.model.remat_policy}, "
        f"{report['devices']} {report['platform']} device(s)"
    )
    print(
        f"step {report['step_ms']:.1f} ms (median {report['step_ms_median']:.1f}), "
        f"{report['tokens_per_s']:,.0f} tokens/s, {report['achieved_flops'] / 1e9:.1f} GFLOP/s of model FLOPs"
    )
    print(f"peak {peak / 1e9:.1f} GFLOP/s ({report['peak_source']}) -> MFU {report['mfu']:.1%}")
    return 0
