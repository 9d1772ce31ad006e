"""Sparse attention backends vs dense: forward and forward+backward time, peak memory, density (or TPU compiled cost)."""

from __future__ import annotations

import argparse
import json
import statistics
import time

from musenet_jax.errors import UserError, unknown_choice


CPU_PALLAS_TOPOLOGY = "v5p:2x2x1"  # on a CPU host the Pallas kernels only interpret: report their TPU cost instead
# Baselines that only the benchmark knows: JAX's own Pallas flash attention (causal, dense: it computes every
# block on or below the diagonal whatever the pattern), the TPU kernel for TPU topologies, the Triton one elsewhere.
BASELINES: tuple[str, ...] = ("jax_flash",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seq", default="1024,4096,8192", help="comma-separated sequence lengths")
    parser.add_argument("--pattern", default="strided,fixed", help="comma-separated patterns (strided, fixed)")
    parser.add_argument(
        "--backends", default="dense,xla_blocksparse",
        help="comma-separated attention backends (dense, xla_blocksparse, pallas) and baselines (jax_flash: JAX's "
        "own Pallas flash attention, causal and dense)",
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--stride", type=int, default=128, help="l of strided(l) and fixed(l, c)")
    parser.add_argument("--summary", type=int, default=32, help="c of fixed(l, c)")
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after one warm-up; the median is reported")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    parser.add_argument(
        "--topology",
        default=None,
        help="compile ahead of time for one chip of this TPU topology (e.g. v5p:2x2x1) and report the compiled cost "
        f"analysis instead of times; default on a CPU host when 'pallas' is among the backends: {CPU_PALLAS_TOPOLOGY}",
    )


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


def _programs(args: argparse.Namespace, pattern, backend: str, *, on_tpu: bool):
    """forward(q, k, v) and forward_backward(q, k, v, cotangent) of one backend."""
    import jax

    from musenet_jax.attention.backends import attend

    def forward(q, k, v):
        if backend == "jax_flash":
            return _jax_flash(q, k, v, on_tpu=on_tpu)
        return attend(q, k, v, (pattern,), backend=backend, block_size=args.block_size)

    def forward_backward(q, k, v, cotangent):
        out, pullback = jax.vjp(forward, q, k, v)
        return out, pullback(cotangent)

    return forward, forward_backward


def _jax_flash(q, k, v, *, on_tpu: bool):
    """JAX's Pallas flash attention on [batch, seq, heads, dim] inputs, causal, scaled like ours."""
    import jax

    scale = q.shape[-1] ** -0.5
    if on_tpu:
        from jax.experimental.pallas.ops.tpu.flash_attention import flash_attention

        heads_first = (0, 2, 1, 3)  # the TPU kernel takes [batch, heads, seq, dim]
        out = flash_attention(*(x.transpose(heads_first) for x in (q, k, v)), causal=True, sm_scale=scale)
        return out.transpose(heads_first)
    from jax.experimental.pallas.ops.gpu.attention import mha

    return mha(q, k, v, None, sm_scale=scale, causal=True, interpret=jax.default_backend() == "cpu")


def _densities(args: argparse.Namespace, pattern, seq: int, backend: str) -> dict:
    from musenet_jax.attention.backends import backend_layout

    layout = backend_layout(pattern, seq, backend="pallas" if backend == "pallas" else "xla_blocksparse",
                            block_size=args.block_size)
    blocks = -(-seq // 128)  # JAX's flash kernels use 128-wide blocks and skip those above the diagonal
    density = {"dense": 1.0, "jax_flash": (blocks + 1) / (2 * blocks)}.get(backend, layout.density)
    return {
        "pattern": pattern.name,
        "seq": seq,
        "backend": backend,
        "density": density,
        "pattern_density": layout.pattern_density,
    }


def _measure(args: argparse.Namespace, pattern, seq: int, backend: str) -> dict:
    import jax
    import jax.numpy as jnp

    dtype = jnp.dtype(args.dtype)
    shape = (args.batch, seq, args.heads, args.head_dim)
    keys = jax.random.split(jax.random.key(seq), 4)
    q, k, v, cotangent = (jax.random.normal(key, shape, dtype) for key in keys)
    forward, forward_backward = _programs(args, pattern, backend, on_tpu=False)
    fwd = jax.jit(forward).lower(q, k, v).compile()
    fwd_bwd = jax.jit(forward_backward).lower(q, k, v, cotangent).compile()
    return _densities(args, pattern, seq, backend) | {
        "fwd_ms": _median_ms(fwd, (q, k, v), args.repeats),
        "fwd_bwd_ms": _median_ms(fwd_bwd, (q, k, v, cotangent), args.repeats),
        "peak_mem_mb": _peak_mb(fwd_bwd),
    }


def _compiled_cost(args: argparse.Namespace, pattern, seq: int, backend: str, device) -> dict:
    """XLA's cost analysis of the programs compiled for one TPU chip (Pallas kernels count by their
    layout-derived cost estimates, see pallas_kernels/kernel_cost.py)."""
    import jax
    import jax.numpy as jnp

    x = jax.ShapeDtypeStruct(
        (args.batch, seq, args.heads, args.head_dim), jnp.dtype(args.dtype), sharding=jax.sharding.SingleDeviceSharding(device)
    )
    forward, forward_backward = _programs(args, pattern, backend, on_tpu=True)
    fwd = jax.jit(forward).lower(x, x, x).compile().cost_analysis()
    fwd_bwd = jax.jit(forward_backward).lower(x, x, x, x).compile().cost_analysis()
    return _densities(args, pattern, seq, backend) | {
        "fwd_gflop": fwd["flops"] / 1e9,
        "fwd_bwd_gflop": fwd_bwd["flops"] / 1e9,
        "fwd_bwd_gbytes": fwd_bwd["bytes accessed"] / 1e9,
    }


def _print_cost_table(rows: list[dict], topology: str) -> None:
    print(f"compiled cost analysis for one chip of {topology} (no timing)")
    print(f"{'pattern':<16}{'seq':>6} {'backend':<16}{'pattern_d':>10}{'density':>9}{'fwd_GF':>10}{'fwd+bwd_GF':>12}{'fwd+bwd_GB':>12}{'x_flops':>9}{'x_vs_flash':>12}")
    for r in rows:
        ratio = f"{r['flops_ratio_fwd_bwd']:>9.2f}" if "flops_ratio_fwd_bwd" in r else f"{'':>9}"
        ratio += f"{r['flops_ratio_vs_jax_flash']:>12.2f}" if "flops_ratio_vs_jax_flash" in r else ""
        print(
            f"{r['pattern']:<16}{r['seq']:>6} {r['backend']:<16}{r['pattern_density']:>10.4f}{r['density']:>9.4f}"
            f"{r['fwd_gflop']:>10.2f}{r['fwd_bwd_gflop']:>12.2f}{r['fwd_bwd_gbytes']:>12.3f}{ratio}"
        )


def _print_table(rows: list[dict]) -> None:
    header = f"{'pattern':<16}{'seq':>6} {'backend':<16}{'pattern_d':>10}{'density':>9}{'fwd_ms':>10}{'fwd+bwd_ms':>12}{'peak_MB':>10}{'x_fwd':>7}{'x_fwd+bwd':>10}{'0.5/d':>7}{'x_vs_flash':>11}"
    print(header)
    for r in rows:
        speed = f"{r['speedup_fwd']:>7.2f}{r['speedup_fwd_bwd']:>10.2f}" if "speedup_fwd" in r else f"{'':>17}"
        target = f"{0.5 / r['density']:>7.2f}" if r["backend"] != "dense" else f"{'':>7}"
        target += f"{r['speedup_vs_jax_flash_fwd_bwd']:>11.2f}" if "speedup_vs_jax_flash_fwd_bwd" in r else ""
        print(
            f"{r['pattern']:<16}{r['seq']:>6} {r['backend']:<16}{r['pattern_density']:>10.4f}{r['density']:>9.4f}"
            f"{r['fwd_ms']:>10.1f}{r['fwd_bwd_ms']:>12.1f}{r['peak_mem_mb']:>10.1f}{speed}{target}"
        )


def run(args: argparse.Namespace) -> int:
    from musenet_jax.attention.backends import BACKENDS
    from musenet_jax.attention.patterns import PATTERN_NAMES, by_name

    seqs = _positive_ints(args.seq, "seq")
    backends = _csv(args.backends, "backends")
    for name in backends:
        if name not in BACKENDS + BASELINES:
            raise unknown_choice("attention backend", name, BACKENDS + BASELINES)
    names = _csv(args.pattern, "pattern")
    for name in names:
        if name not in PATTERN_NAMES:
            raise unknown_choice("attention pattern", name, PATTERN_NAMES)
    patterns = [by_name(n, stride=args.stride, summary=args.summary) for n in names]

    import jax

    topology = args.topology or (CPU_PALLAS_TOPOLOGY if "pallas" in backends and jax.default_backend() == "cpu" else None)
    if topology:
        from musenet_jax.train.compile import topology_devices

        device = topology_devices(topology)[0]

    rows = []
    for pattern in patterns:
        for seq in seqs:
            if topology:
                group = [_compiled_cost(args, pattern, seq, backend, device) for backend in backends]
            else:
                group = [_measure(args, pattern, seq, backend) for backend in backends]
            dense = next((r for r in group if r["backend"] == "dense"), None)
            flash = next((r for r in group if r["backend"] == "jax_flash"), None)
            for r in group:
                if dense is not None and topology:
                    r["flops_ratio_fwd_bwd"] = dense["fwd_bwd_gflop"] / r["fwd_bwd_gflop"]
                elif dense is not None:
                    r["speedup_fwd"] = dense["fwd_ms"] / r["fwd_ms"]
                    r["speedup_fwd_bwd"] = dense["fwd_bwd_ms"] / r["fwd_bwd_ms"]
                if flash is not None and topology:
                    r["flops_ratio_vs_jax_flash"] = flash["fwd_bwd_gflop"] / r["fwd_bwd_gflop"]
                elif flash is not None:
                    r["speedup_vs_jax_flash_fwd_bwd"] = flash["fwd_bwd_ms"] / r["fwd_bwd_ms"]
                if args.json:
                    print(json.dumps(r), flush=True)
            rows.extend(group)
    if not args.json:
        if topology:
            _print_cost_table(rows, topology)
        else:
            _print_table(rows)
    return 0
