"""Input pipeline vs training: tokens/s the pipeline delivers and the train step consumes, in one run."""

from __future__ import annotations

import argparse
import json
import time

from musenet_jax.cli.common import add_config_arguments
from musenet_jax.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, default="small")
    parser.add_argument(
        "--data-dir", default=None, help="TFDS data dir (default: data.data_dir of the config)"
    )
    parser.add_argument("--batches", type=int, default=20, help="pipeline batches timed per round")
    parser.add_argument(
        "--steps", type=int, default=3, help="train steps timed per round (after one compile step)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternations of pipeline and train step")
    parser.add_argument("--json", action="store_true", help="one JSON object")


def _timed(fn, count: int) -> float:
    """Seconds per call of `fn`, over `count` calls."""
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - start) / count


def run(args: argparse.Namespace) -> int:
    import jax

    from musenet_jax.cli.common import config_from_args
    from musenet_jax.data.labels import with_dataset_labels
    from musenet_jax.data.pipeline import make_train_iterator
    from musenet_jax.encoding.tokenizer import Tokenizer
    from musenet_jax.model.sharding import make_mesh
    from musenet_jax.train.setup import make_train_setup
    from musenet_jax.train.step import make_train_step

    if min(args.batches, args.steps, args.rounds) < 1:
        raise UserError("--batches, --steps and --rounds must be at least 1")
    cfg = config_from_args(args, {"data_dir": "data.data_dir"})
    cfg = cfg.replace(encoding=with_dataset_labels(cfg.data, cfg.encoding))
    tokenizer = Tokenizer(cfg.encoding)
    iterator = make_train_iterator(
        cfg.data, tokenizer, cfg.model.context, cfg.train.global_batch, process_index=0, process_count=1
    )
    first = next(iterator)  # opening the source and starting the read threads is not throughput

    setup = make_train_setup(cfg, make_mesh(cfg.mesh), tokenizer)
    state = setup.init_state()
    train_step = make_train_step(setup)
    batch = jax.device_put(first, setup.batch_sharding)
    state, metrics = train_step(state, batch)  # compile
    jax.block_until_ready(metrics)

    def step() -> None:
        nonlocal state, metrics
        state, metrics = train_step(state, batch)
        jax.block_until_ready(metrics)

    # Pipeline and step alternate so that both see the same (shared, busy) machine; the best round of each
    # is kept.
    batch_s, step_s = [], []
    for _ in range(args.rounds):
        batch_s.append(_timed(lambda: next(iterator), args.batches))
        step_s.append(_timed(step, args.steps))
    tokens = cfg.train.global_batch * cfg.model.context
    pipeline, train = tokens / min(batch_s), tokens / min(step_s)
    report = {
        "config": cfg.name,
        "global_batch": cfg.train.global_batch,
        "context": cfg.model.context,
        "data_workers": cfg.data.worker_count,
        "pipeline_tokens_per_s": pipeline,
        "train_tokens_per_s": train,
        "ratio": pipeline / train,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"pipeline {pipeline:,.0f} tokens/s, train step {train:,.0f} tokens/s ({cfg.name}, "
            f"batch {cfg.train.global_batch} x {cfg.model.context}): pipeline/train = {report['ratio']:.1f}x"
        )
    return 0
