"""Sparse attention backends vs dense: forward and forward+backward time, peak memory, density."""

from __future__ import annotations

import argparse
import json
import statistics
import time

from musenet_jax.errors import UserError, unknown_choice


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seq", default="1024,4096,8192", help="comma-separated sequence lengths")
    parser.add_argument("--pattern", default="strided,fixed", help="comma-separated patterns (strided, fixed)")
    parser.add_argument("--backends", default="dense,xla_blocksparse", help="comma-separated attention backends")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--stride", type=int, default=128, help="l of strided(l) and fixed(l, c)")
    parser.add_argument("--summary", type=int, default=32, help="c of fixed(l, c)")
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after one warm-up; the median is reported")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")


def _csv(text: str, kind: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UserError(f"--{kind} needs at least one value")
    return items


def _positive_ints(text: str, kind: str) -> list[int]:
    try:
        values = [int(t) for t in _csv(text, kind)]
    except ValueError:
        raise UserError(f"--{kind} takes comma-separated integers, got {text!r}") from None
    if min(values) < 1:
        raise UserError(f"--{kind} values must be >= 1, got {text!r}")
    return values


def _median_ms(fn, args, repeats: int) -> float:
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _peak_mb(compiled) -> float:
    """Peak bytes of one compiled program as XLA plans them (arguments + outputs + temporaries)."""
    mem = compiled.memory_analysis()
    total = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes
    return total / 2**20


def _measure(args: argparse.Namespace, pattern, seq: int, backend: str) -> dict:
    import jax
    import jax.numpy as jnp

    from pallas_kernels.attention import attend
    from pallas_kernels.layouts import make_layout

    dtype = jnp.dtype(args.dtype)
    shape = (args.batch, seq, args.heads, args.head_dim)
    keys = jax.random.split(jax.random.key(seq), 4)
    q, k, v, cotangent = (jax.random.normal(key, shape, dtype) for key in keys)

    def forward(q, k, v):
        return attend(q, k, v, (pattern,), backend=backend, block_size=args.block_size)

    def forward_backward(q, k, v):
        out, pullback = jax.vjp(forward, q, k, v)
        return out, pullback(cotangent)

    fwd = jax.jit(forward).lower(q, k, v).compile()
    fwd_bwd = jax.jit(forward_backward).lower(q, k, v).compile()
    layout = make_layout(pattern, seq, args.block_size)
    return {
        "pattern": pattern.name,
        "seq": seq,
        "backend": backend,
        "density": 1.0 if backend == "dense" else layout.density,
        "pattern_density": layout.pattern_density,
        "fwd_ms": _median_ms(fwd, (q, k, v), args.repeats),
        "fwd_bwd_ms": _median_ms(fwd_bwd, (q, k, v), args.repeats),
        "peak_mem_mb": _peak_mb(fwd_bwd),
    }


def _print_table(rows: list[dict]) -> None:
    header = f"{'pattern':<16}{'seq':>6} {'backend':<16}{'pattern_d':>10}{'density':>9}{'fwd_ms':>10}{'fwd+bwd_ms':>12}{'peak_MB':>10}{'x_fwd':>7}{'x_fwd+bwd':>10}{'0.5/d':>7}"
    print(header)
    for r in rows:
        speed = f"{r['speedup_fwd']:>7.2f}{r['speedup_fwd_bwd']:>10.2f}" if "speedup_fwd" in r else f"{'':>17}"
        target = f"{0.5 / r['density']:>7.2f}" if r["backend"] != "dense" else ""
        print(
            f"{r['pattern']:<16}{r['seq']:>6} {r['backend']:<16}{r['pattern_density']:>10.4f}{r['density']:>9.4f}"
            f"{r['fwd_ms']:>10.1f}{r['fwd_bwd_ms']:>12.1f}{r['peak_mem_mb']:>10.1f}{speed}{target}"
        )


def run(args: argparse.Namespace) -> int:
    from pallas_kernels.attention import BACKENDS
    from pallas_kernels.patterns import PATTERN_NAMES, by_name

    seqs = _positive_ints(args.seq, "seq")
    backends = _csv(args.backends, "backends")
    for name in backends:
        if name not in BACKENDS:
            raise unknown_choice("attention backend", name, BACKENDS)
    names = _csv(args.pattern, "pattern")
    for name in names:
        if name not in PATTERN_NAMES:
            raise unknown_choice("attention pattern", name, PATTERN_NAMES)
    patterns = [by_name(n, stride=args.stride, summary=args.summary) for n in names]

    rows = []
    for pattern in patterns:
        for seq in seqs:
            group = [_measure(args, pattern, seq, backend) for backend in backends]
            dense = next((r for r in group if r["backend"] == "dense"), None)
            for r in group:
                if dense is not None:
                    r["speedup_fwd"] = dense["fwd_ms"] / r["fwd_ms"]
                    r["speedup_fwd_bwd"] = dense["fwd_bwd_ms"] / r["fwd_bwd_ms"]
                if args.json:
                    print(json.dumps(r), flush=True)
            rows.extend(group)
    if not args.json:
        _print_table(rows)
    return 0
