"""Sparse attention backends vs dense: forward and forward+backward time, peak memory, density (or TPU
compiled cost).

With a TPU topology (the default on a CPU host when 'pallas' is benchmarked) nothing runs: each program is
compiled ahead of time for one chip and reported by its compiled cost analysis, the grid steps of the
Mosaic kernels it contains (read back from libtpu's Mosaic dump, `iteration_bounds`), and a roofline
estimate est_ms = max(FLOPs / peak, bytes / HBM bandwidth) + grid_steps x 0.35 us (musenet_jax/hardware.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from musenet_jax.errors import UserError, unknown_choice

CPU_PALLAS_TOPOLOGY = (
    "v5p:2x2x1"  # on a CPU host the Pallas kernels only interpret: report their TPU cost instead
)
# Baselines that only the benchmark knows: JAX's own Pallas flash attention (causal, dense: it computes every
# block on or below the diagonal whatever the pattern), the TPU kernel for TPU topologies, the Triton one
# elsewhere.
BASELINES: tuple[str, ...] = ("jax_flash", "jax_splash")
# jax_splash: JAX's splash attention (TPU only) with the same pattern mask, built from our pattern through
# its mask classes (a NumpyMask per head): the anchor for est_ms. On a CPU host it runs interpreted.
# pallas_fused: the pallas backend with its TPU kernels' fused backward (model.pallas_backward=fused).
VARIANTS: tuple[str, ...] = ("pallas_fused",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seq", default="1024,4096,8192", help="comma-separated sequence lengths")
    parser.add_argument(
        "--pattern", default="strided,fixed", help="comma-separated patterns (strided, fixed)"
    )
    parser.add_argument(
        "--backends",
        default="dense,xla_blocksparse",
        help="comma-separated attention backends (dense, xla_blocksparse, pallas; pallas_fused: pallas with "
        "the fused TPU backward) and baselines (jax_flash: JAX's own Pallas flash attention, causal and "
        "dense; jax_splash: JAX's splash attention with the pattern's mask)",
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--stride", type=int, default=128, help="l of strided(l) and fixed(l, c)")
    parser.add_argument("--summary", type=int, default=32, help="c of fixed(l, c)")
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed calls after one warm-up; the median is reported"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    parser.add_argument(
        "--topology",
        default=None,
        help="compile ahead of time for one chip of this TPU topology (e.g. v5p:2x2x1) and report the "
        "compiled cost analysis instead of times; default on a CPU host when 'pallas' is among the backends: "
        f"{CPU_PALLAS_TOPOLOGY}",
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
    total = (
        mem.argument_size_in_bytes
        + mem.output_size_in_bytes
        + mem.temp_size_in_bytes
        - mem.alias_size_in_bytes
    )
    return total / 2**20


def _programs(args: argparse.Namespace, pattern, backend: str, *, on_tpu: bool):
    """forward(q, k, v) and forward_backward(q, k, v, cotangent) of one backend."""
    import jax

    from musenet_jax.attention.backends import attend

    def forward(q, k, v):
        if backend == "jax_flash":
            return _jax_flash(q, k, v, on_tpu=on_tpu)
        if backend == "jax_splash":
            return _jax_splash(q, k, v, pattern, on_tpu=on_tpu)
        if backend == "pallas_fused":
            return attend(
                q, k, v, (pattern,), backend="pallas", block_size=args.block_size, fused_backward=True
            )
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


def _splash_mask(pattern, seq: int):
    import numpy as np

    return np.asarray(pattern.mask(seq), dtype=bool)


def _jax_splash(q, k, v, pattern, *, on_tpu: bool):
    """JAX's splash attention on [batch, seq, heads, dim] inputs with `pattern`'s mask, scaled like ours."""
    import jax
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    batch, seq, heads, dim = q.shape
    head_mask = splash.NumpyMask(_splash_mask(pattern, seq))
    kernel = splash.make_splash_mha(
        splash.MultiHeadMask([head_mask] * heads),
        head_shards=1,
        q_seq_shards=1,
        block_sizes=splash.BlockSizes.get_default(),
        interpret=not on_tpu,
    )
    heads_first = (0, 2, 1, 3)  # splash takes [heads, seq, dim] per batch element
    q = q * (dim**-0.5)
    out = jax.vmap(kernel)(*(x.transpose(heads_first) for x in (q, k, v)))
    return out.transpose(heads_first)


def _splash_active_blocks(pattern, seq: int, block: int = 128) -> int:
    """Blocks of the mask that splash computes at its default 128 x 128 blocks (natural order)."""
    import numpy as np

    blocks = -(-seq // block)
    padded = np.zeros((blocks * block, blocks * block), bool)
    padded[:seq, :seq] = _splash_mask(pattern, seq)
    return int(padded.reshape(blocks, block, blocks, block).any(axis=(1, 3)).sum())


def _splash_cost(
    args: argparse.Namespace, pattern, seq: int, *, forward_only: bool = False
) -> tuple[float, float]:
    """(FLOPs, bytes) of splash's kernels, which declare no cost: counted from its active blocks."""
    from musenet_jax.bench.kernel_estimate import flash_fwd_bwd_cost

    return flash_fwd_bwd_cost(
        active_blocks=_splash_active_blocks(pattern, seq),
        block_q=128,
        block_k=128,
        q_len=seq,
        k_len=seq,
        dim=args.head_dim,
        programs=args.batch * args.heads,
        itemsize=2 if args.dtype == "bfloat16" else 4,
        forward_only=forward_only,
    )


def _densities(args: argparse.Namespace, pattern, seq: int, backend: str) -> dict:
    from musenet_jax.attention.backends import backend_layout

    layout = backend_layout(
        pattern,
        seq,
        backend="pallas" if backend.startswith("pallas") else "xla_blocksparse",
        block_size=args.block_size,
    )
    blocks = -(-seq // 128)  # JAX's flash kernels use 128-wide blocks and skip those above the diagonal
    density = {"dense": 1.0, "jax_flash": (blocks + 1) / (2 * blocks)}.get(backend, layout.density)
    if backend == "jax_splash":
        density = _splash_active_blocks(pattern, seq) * 128 * 128 / seq**2
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


def _compiled_cost(
    args: argparse.Namespace, pattern, seq: int, backend: str, device, topology: str, dump: str | None
) -> dict:
    """XLA's cost analysis of the programs compiled for one TPU chip (Pallas kernels count by their
    layout-derived cost estimates, see pallas_kernels/kernel_cost.py; splash declares none, so its kernels
    are counted from its mask), the Mosaic kernels' grid steps and the roofline estimate."""
    import jax
    import jax.numpy as jnp

    from musenet_jax.bench import mosaic_dump
    from musenet_jax.hardware import TPU_STEP_US, estimate_ms

    x = jax.ShapeDtypeStruct(
        (args.batch, seq, args.heads, args.head_dim),
        jnp.dtype(args.dtype),
        sharding=jax.sharding.SingleDeviceSharding(device),
    )
    forward, forward_backward = _programs(args, pattern, backend, on_tpu=True)

    def compile_and_read(fn, *shapes):
        before = mosaic_dump.snapshot(dump) if dump else frozenset()
        cost = jax.jit(fn).lower(*shapes).compile().cost_analysis()
        kernels = mosaic_dump.kernels(dump, since=before) if dump else []
        return cost, kernels

    fwd, fwd_kernels = compile_and_read(forward, x, x, x)
    fwd_bwd, fwd_bwd_kernels = compile_and_read(forward_backward, x, x, x, x)
    flops, nbytes, fwd_flops = fwd_bwd["flops"], fwd_bwd["bytes accessed"], fwd["flops"]
    if backend == "jax_splash":
        kernel_flops, kernel_bytes = _splash_cost(args, pattern, seq)
        flops, nbytes = flops + kernel_flops, nbytes + kernel_bytes
        fwd_flops += _splash_cost(args, pattern, seq, forward_only=True)[0]
    row = _densities(args, pattern, seq, backend) | {
        "fwd_gflop": fwd_flops / 1e9,
        "fwd_bwd_gflop": flops / 1e9,
        "fwd_bwd_gbytes": nbytes / 1e9,
    }
    if dump is None:
        return row
    steps_fwd = sum(k.grid_steps for k in fwd_kernels)
    steps = sum(k.grid_steps for k in fwd_bwd_kernels)
    return row | {
        "grid_steps_fwd": steps_fwd,
        "grid_steps": steps,  # forward + backward program
        "kernels": {k.name: k.grid_steps for k in fwd_bwd_kernels}
        if len({k.name for k in fwd_bwd_kernels}) == len(fwd_bwd_kernels)
        else [[k.name, k.grid_steps] for k in fwd_bwd_kernels],
        "step_us": TPU_STEP_US,
        "est_ms": estimate_ms(flops, nbytes, steps, topology=topology),
    }


def _print_cost_table(rows: list[dict], topology: str) -> None:
    print(f"compiled cost analysis for one chip of {topology} (no timing)")
    if any("est_ms" in r for r in rows):
        print(
            "est_ms = max(FLOPs / peak, bytes / HBM bandwidth) + grid_steps x "
            f"{rows[0].get('step_us', 0.35)} us "
            "(grid_steps: the Mosaic kernels' iteration_bounds, forward + backward)"
        )
    print(
        f"{'pattern':<16}{'seq':>6} {'backend':<16}{'pattern_d':>10}{'density':>9}"
        f"{'fwd_GF':>10}{'fwd+bwd_GF':>12}"
        f"{'fwd+bwd_GB':>12}{'steps':>9}{'est_ms':>9}{'x_flops':>9}{'x_vs_flash':>12}{'vs_splash':>11}"
    )
    for r in rows:
        steps = f"{r['grid_steps']:>9}{r['est_ms']:>9.3f}" if "est_ms" in r else f"{'':>18}"
        ratio = f"{r['flops_ratio_fwd_bwd']:>9.2f}" if "flops_ratio_fwd_bwd" in r else f"{'':>9}"
        ratio += f"{r['flops_ratio_vs_jax_flash']:>12.2f}" if "flops_ratio_vs_jax_flash" in r else f"{'':>12}"
        ratio += f"{r['est_ms_ratio_vs_jax_splash']:>11.2f}" if "est_ms_ratio_vs_jax_splash" in r else ""
        print(
            f"{r['pattern']:<16}{r['seq']:>6} {r['backend']:<16}"
            f"{r['pattern_density']:>10.4f}{r['density']:>9.4f}"
            f"{r['fwd_gflop']:>10.2f}{r['fwd_bwd_gflop']:>12.2f}{r['fwd_bwd_gbytes']:>12.3f}{steps}{ratio}"
        )


def _print_table(rows: list[dict]) -> None:
    header = (
        f"{'pattern':<16}{'seq':>6} {'backend':<16}{'pattern_d':>10}{'density':>9}{'fwd_ms':>10}"
        f"{'fwd+bwd_ms':>12}{'peak_MB':>10}{'x_fwd':>7}{'x_fwd+bwd':>10}{'0.5/d':>7}{'x_vs_flash':>11}"
    )
    print(header)
    for r in rows:
        speed = (
            f"{r['speedup_fwd']:>7.2f}{r['speedup_fwd_bwd']:>10.2f}" if "speedup_fwd" in r else f"{'':>17}"
        )
        target = f"{0.5 / r['density']:>7.2f}" if r["backend"] != "dense" else f"{'':>7}"
        target += f"{r['speedup_vs_jax_flash_fwd_bwd']:>11.2f}" if "speedup_vs_jax_flash_fwd_bwd" in r else ""
        print(
            f"{r['pattern']:<16}{r['seq']:>6} {r['backend']:<16}"
            f"{r['pattern_density']:>10.4f}{r['density']:>9.4f}"
            f"{r['fwd_ms']:>10.1f}{r['fwd_bwd_ms']:>12.1f}{r['peak_mem_mb']:>10.1f}{speed}{target}"
        )


def run(args: argparse.Namespace) -> int:
    from musenet_jax.attention.backends import BACKENDS
    from musenet_jax.attention.patterns import PATTERN_NAMES, by_name

    seqs = _positive_ints(args.seq, "seq")
    backends = _csv(args.backends, "backends")
    for name in backends:
        if name not in BACKENDS + VARIANTS + BASELINES:
            raise unknown_choice("attention backend", name, BACKENDS + VARIANTS + BASELINES)
    names = _csv(args.pattern, "pattern")
    for name in names:
        if name not in PATTERN_NAMES:
            raise unknown_choice("attention pattern", name, PATTERN_NAMES)
    patterns = [by_name(n, stride=args.stride, summary=args.summary) for n in names]

    import jax

    uses_pallas = any(name.startswith("pallas") for name in backends)
    if uses_pallas:
        from pallas_kernels.sparse_flash import BlockSizeError, pallas_block_size

        try:
            pallas_block_size(args.block_size)
        except BlockSizeError as err:
            raise UserError(str(err)) from None
    topology = args.topology or (
        CPU_PALLAS_TOPOLOGY if uses_pallas and jax.default_backend() == "cpu" else None
    )
    dump = None
    if topology:
        import tempfile

        from musenet_jax.bench import mosaic_dump
        from musenet_jax.train.compile import topology_devices

        # Before libtpu starts (it reads LIBTPU_INIT_ARGS once): the kernels' grids are read from the dump.
        dump = mosaic_dump.enable(tempfile.mkdtemp(prefix="musenet-mosaic-"))
        device = topology_devices(topology)[0]

    rows = []
    for pattern in patterns:
        for seq in seqs:
            if topology:
                group = [
                    _compiled_cost(args, pattern, seq, backend, device, topology, dump)
                    for backend in backends
                ]
            else:
                group = [_measure(args, pattern, seq, backend) for backend in backends]
            dense = next((r for r in group if r["backend"] == "dense"), None)
            flash = next((r for r in group if r["backend"] == "jax_flash"), None)
            splash = next((r for r in group if r["backend"] == "jax_splash" and "est_ms" in r), None)
            for r in group:
                if splash is not None and "est_ms" in r:
                    r["est_ms_ratio_vs_jax_splash"] = r["est_ms"] / splash["est_ms"]
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
