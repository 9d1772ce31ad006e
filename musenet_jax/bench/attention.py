"""Sparse attention backends vs dense: forward and forward+backward time, peak memory, density (or TPU
compiled cost).

With a TPU topology (the default on a CPU host when 'pallas' is benchmarked) nothing runs: each program is
compiled ahead of time for one chip and reported by its compiled cost analysis, the grid steps of the
Mosaic kernels it contains (read back from libtpu's Mosaic dump, `iteration_bounds`), kernel and glue bytes
apart, the compiled code size, and est_ms = kernel time (a roofline per kernel with a vector-unit term read
from the dumped kernel) + glue time, no overlap assumed (musenet_jax/bench/kernel_estimate.py). `jax_splash`
is compiled at its best block sizes from a sweep (SPLASH_BLOCKS per axis); `jax_splash_components` is splash
on our layout's components, each at its own best block sizes from the same sweep (splash_components.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import re
import statistics
import time

from musenet_jax.errors import UserError, unknown_choice

CPU_PALLAS_TOPOLOGY = (
    "v5p:2x2x1"  # on a CPU host the Pallas kernels only interpret: report their TPU cost instead
)
# Baselines that only the benchmark knows: JAX's own Pallas flash attention (causal, dense: it computes every
# block on or below the diagonal whatever the pattern), the TPU kernel for TPU topologies, the Triton one
# elsewhere; jax_cudnn: cuDNN's fused flash attention through jax.nn.dot_product_attention (causal, dense;
# NVIDIA GPUs only, bf16/fp16).
BASELINES: tuple[str, ...] = ("jax_flash", "jax_splash", "jax_splash_components", "jax_cudnn")
# jax_splash: JAX's splash attention (TPU only) with the same pattern mask, built from our pattern through
# its mask classes (a NumpyMask per head): the anchor for est_ms. On a CPU host it runs interpreted.
# jax_splash_components: splash on our layout's components (reordered as our kernels see them), merged by
# their lse like our op (musenet_jax/bench/splash_components.py): the kernels compared without splash's
# natural-order mask.
SPLASH_BACKENDS: tuple[str, ...] = ("jax_splash", "jax_splash_components")
# pallas_fused: the pallas backend with its TPU kernels' fused backward (model.pallas_backward=fused).
VARIANTS: tuple[str, ...] = ("pallas_fused",)
# Splash block edges swept per axis (block_q, block_kv, block_kv_compute; the backward uses the forward's).
# Every configuration is ranked by kernel_estimate.splash_sweep_ms; the best SPLASH_COMPILED are compiled
# and the one with the lowest est_ms is reported, with its block sizes.
SPLASH_BLOCKS: tuple[int, ...] = (128, 256, 512, 1024)
SPLASH_COMPILED = 2


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
        "dense; jax_splash: JAX's splash attention with the pattern's mask; jax_splash_components: splash on "
        "our layout's components (strided: band + far part on the (i mod l, i div l) order; fixed: "
        "block + summary keys), merged by lse like our op, each at its best swept block sizes; jax_cudnn: "
        "cuDNN's flash attention, causal and dense, GPU only). At musenet_72l's shape (v5p, AOT, "
        "fwd+bwd est_ms) pallas / jax_splash / jax_splash_components: strided(128) n=4096 "
        "0.45 / 2.16 / 2.43 and n=16384 1.56 / 28.09 / 7.94; fixed(128,32) n=4096 0.81 / 2.15 / 1.61 and "
        "n=16384 9.59 / 28.09 / 10.46 (docs/scaling.md)",
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


def _programs(args: argparse.Namespace, pattern, backend: str, *, on_tpu: bool, splash_blocks=None):
    """forward(q, k, v) and forward_backward(q, k, v, cotangent) of one backend (`splash_blocks`: the
    splash BlockSizes, one per splash call, default splash's own default)."""
    import jax

    from musenet_jax.attention.backends import attend

    def forward(q, k, v):
        if backend == "jax_flash":
            return _jax_flash(q, k, v, on_tpu=on_tpu)
        if backend == "jax_splash":
            blocks = splash_blocks[0] if splash_blocks else None
            return _jax_splash(q, k, v, pattern, on_tpu=on_tpu, block_sizes=blocks)
        if backend == "jax_splash_components":
            from musenet_jax.bench.splash_components import components_attention

            return components_attention(q, k, v, pattern, interpret=not on_tpu, block_sizes=splash_blocks)
        if backend == "jax_cudnn":
            return _jax_cudnn(q, k, v)
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


def _jax_cudnn(q, k, v):
    """cuDNN's fused attention on [batch, seq, heads, dim] inputs, causal, scaled like ours (an error off a
    CUDA GPU or for float32 inputs: no fallback, so the row is cuDNN's or none)."""
    import jax

    return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")


def _unfit_blocks(err: Exception, args: argparse.Namespace, backend: str, pattern, seq: int) -> Exception:
    """A kernel whose blocks overflow the TPU core's scoped VMEM as one line saying what to change; any
    other compile failure as it is."""
    found = re.search(r"Scoped allocation with size (\S+) and limit (\S+) exceeded", str(err))
    if found is None:
        return err
    return UserError(
        f"{backend} on {pattern.name} at n = {seq}: blocks of {args.block_size} with {args.heads} heads of "
        f"{args.head_dim} need {found[1]}B of the TPU core's scoped VMEM (limit {found[2]}B); "
        f"use a smaller --block-size"
    )


def _splash_mask(pattern, seq: int):
    import numpy as np

    return np.asarray(pattern.mask(seq), dtype=bool)


def _jax_splash(q, k, v, pattern, *, on_tpu: bool, block_sizes=None):
    """JAX's splash attention on [batch, seq, heads, dim] inputs with `pattern`'s mask, scaled like ours."""
    import jax
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    batch, seq, heads, dim = q.shape
    head_mask = splash.NumpyMask(_splash_mask(pattern, seq))
    kernel = splash.make_splash_mha(
        splash.MultiHeadMask([head_mask] * heads),
        head_shards=1,
        q_seq_shards=1,
        block_sizes=block_sizes or splash.BlockSizes.get_default(),
        interpret=not on_tpu,
    )
    heads_first = (0, 2, 1, 3)  # splash takes [heads, seq, dim] per batch element
    q = q * (dim**-0.5)
    out = jax.vmap(kernel)(*(x.transpose(heads_first) for x in (q, k, v)))
    return out.transpose(heads_first)


def _splash_masks(pattern, seq: int, backend: str) -> dict:
    """{splash call: its [q_len, kv_len] mask}: the pattern's mask in natural order (jax_splash) or one per
    component in its reordered layout (jax_splash_components)."""
    if backend == "jax_splash":
        return {"all": _splash_mask(pattern, seq)}
    from musenet_jax.bench.splash_components import splash_parts

    return {part.name: part.array for part in splash_parts(pattern, seq)}


def _splash_active_blocks(mask, block_q: int = 128, block_kv: int = 128) -> int:
    """[block_q, block_kv] blocks of one splash call's mask that splash computes."""
    import numpy as np

    q_len, kv_len = mask.shape
    rows, cols = -(-q_len // block_q), -(-kv_len // block_kv)
    padded = np.zeros((rows * block_q, cols * block_kv), bool)
    padded[:q_len, :kv_len] = mask
    return int(padded.reshape(rows, block_q, cols, block_kv).any(axis=(1, 3)).sum())


def _splash_costs(args: argparse.Namespace, masks: dict, blocks: tuple) -> dict:
    """{"fwd" | "dq" | "dkv": (FLOPs, bytes)} of splash's kernels, which declare no cost: counted from the
    active blocks of every call's mask at its (block_q, block_kv, ...), summed by phase."""
    from musenet_jax.bench.kernel_estimate import splash_kernel_costs

    total = {"fwd": (0.0, 0.0), "dq": (0.0, 0.0), "dkv": (0.0, 0.0)}
    for mask, (block_q, block_kv, *_) in zip(masks.values(), blocks):
        cost = splash_kernel_costs(
            active_blocks=_splash_active_blocks(mask, block_q, block_kv),
            block_q=block_q,
            block_k=block_kv,
            q_len=mask.shape[0],
            k_len=mask.shape[1],
            dim=args.head_dim,
            programs=args.batch * args.heads,
            itemsize=2 if args.dtype == "bfloat16" else 4,
        )
        total = {p: (total[p][0] + cost[p][0], total[p][1] + cost[p][1]) for p in total}
    return total


def _splash_block_sizes(block_q: int, block_kv: int, block_kv_compute: int):
    """One splash configuration: the backward kernels take the forward's blocks."""
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    return splash.BlockSizes(
        block_q=block_q,
        block_kv=block_kv,
        block_kv_compute=block_kv_compute,
        block_q_dkv=block_q,
        block_kv_dkv=block_kv,
        block_kv_dkv_compute=block_kv_compute,
        block_q_dq=block_q,
        block_kv_dq=block_kv,
    )


def _block_sizes_dict(block_sizes) -> dict:
    """The BlockSizes fields as JSON values (layouts by name)."""
    return {
        f.name: getattr(getattr(block_sizes, f.name), "name", getattr(block_sizes, f.name))
        for f in dataclasses.fields(block_sizes)
    }


def _splash_sweep(
    args: argparse.Namespace, mask, topology: str, ops_per_score: float
) -> list[tuple[float, tuple]]:
    """Every configuration of one splash call with edges from SPLASH_BLOCKS that divide its query and key
    lengths, ranked by the sweep estimate (best first): [(ms, (block_q, block_kv, block_kv_compute))].
    `ops_per_score`: vector ops per computed score and kernel, as measured on a compiled configuration (0
    before the first)."""
    from musenet_jax.bench.kernel_estimate import splash_grid_steps, splash_sweep_ms

    q_len, kv_len = mask.shape
    q_edges = [b for b in SPLASH_BLOCKS if q_len % b == 0] or [q_len]
    kv_edges = [b for b in SPLASH_BLOCKS if kv_len % b == 0] or [kv_len]
    ranked = []
    for block_q, block_kv in itertools.product(q_edges, kv_edges):
        cost = _splash_costs(args, {"call": mask}, ((block_q, block_kv),))
        steps = splash_grid_steps(q_len, args.heads, args.batch, block_q, block_kv, kv_seq=kv_len)
        scores = _splash_scores(args, {"call": mask}, ((block_q, block_kv),))
        ms = splash_sweep_ms(cost, steps, ops_per_score * scores, topology)
        # block_kv_compute does not change the counted cost: prefer the widest slice whose float32
        # [block_q, block_kv_compute] score tile stays within 1 MiB of VMEM, then narrower ones.
        for compute in sorted((c for c in kv_edges if c <= block_kv and block_kv % c == 0), reverse=True):
            penalty = 0 if block_q * compute * 4 <= 2**20 else 1
            ranked.append((ms, penalty, -compute, (block_q, block_kv, compute)))
    ranked.sort()
    return [(ms, blocks) for ms, _, _, blocks in ranked]


def _splash_scores(args: argparse.Namespace, masks: dict, blocks: tuple) -> int:
    """Scores one splash kernel phase computes: every element of the active blocks of every call, per batch
    element and head."""
    active = sum(
        _splash_active_blocks(mask, block_q, block_kv) * block_q * block_kv
        for mask, (block_q, block_kv, *_) in zip(masks.values(), blocks)
    )
    return active * args.batch * args.heads


def _densities(args: argparse.Namespace, pattern, seq: int, backend: str, splash_blocks=None) -> dict:
    from musenet_jax.attention.backends import backend_layout

    layout = backend_layout(
        pattern,
        seq,
        backend="pallas" if backend.startswith("pallas") else "xla_blocksparse",
        block_size=args.block_size,
    )
    blocks = -(-seq // 128)  # JAX's flash kernels use 128-wide blocks and skip those above the diagonal
    causal = (blocks + 1) / (2 * blocks)
    density = {"dense": 1.0, "jax_flash": causal, "jax_cudnn": causal}.get(backend, layout.density)
    if backend in SPLASH_BACKENDS:  # the computed pairs of every splash call, over n^2
        masks = _splash_masks(pattern, seq, backend)
        blocks = splash_blocks or ((128, 128),) * len(masks)
        density = _splash_scores(args, masks, blocks) / (args.batch * args.heads * seq**2)
    return {
        "pattern": pattern.name,
        "seq": seq,
        "backend": backend,
        "density": density,
        "pattern_density": layout.pattern_density,
    }


def measure(args: argparse.Namespace, pattern, seq: int, backend: str) -> dict:
    """One backend timed on this machine: forward and forward+backward median ms, peak memory, density."""
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


def _native(fn, shape: tuple[int, ...]):
    """fn on [B, L, H * D] arguments and results, the layout a projection matmul writes: a compiled
    [B, L, H, D] argument has head_dim as its minor dimension (64 lanes stored in 128 on TPU), so every
    backend would pay a relayout at the program's boundary that a model's projection does not force."""
    import jax

    def native(*xs):
        results = fn(*(x.reshape(shape) for x in xs))
        return jax.tree.map(lambda y: y.reshape(*y.shape[:2], -1), results)

    return native


def _compiled_cost(
    args: argparse.Namespace,
    pattern,
    seq: int,
    backend: str,
    device,
    topology: str,
    dump: str | None,
    splash_blocks: tuple[tuple[int, int, int], ...] | None = None,
) -> dict:
    """One backend compiled for one TPU chip: XLA's cost analysis of the whole program (Pallas kernels count
    by their declared cost estimates, see pallas_kernels/kernel_cost.py; splash declares none, which XLA
    counts as nothing, so its kernels are counted from its mask and added), kernels and glue apart, code
    size, the Mosaic kernels' grid steps and vector ops, and est_ms (kernel_estimate.py)."""
    import jax
    import jax.numpy as jnp

    from musenet_jax.bench import hlo_glue, mosaic_dump
    from musenet_jax.bench import kernel_estimate as est

    x = jax.ShapeDtypeStruct(
        (args.batch, seq, args.heads * args.head_dim),
        jnp.dtype(args.dtype),
        sharding=jax.sharding.SingleDeviceSharding(device),
    )
    block_sizes = [_splash_block_sizes(*blocks) for blocks in splash_blocks] if splash_blocks else None
    forward, forward_backward = (
        _native(fn, (args.batch, seq, args.heads, args.head_dim))
        for fn in _programs(args, pattern, backend, on_tpu=True, splash_blocks=block_sizes)
    )

    def compile_and_read(fn, *shapes):
        before = mosaic_dump.snapshot(dump) if dump else frozenset()
        try:
            compiled = jax.jit(fn).lower(*shapes).compile()
        except jax.errors.JaxRuntimeError as err:
            raise _unfit_blocks(err, args, backend, pattern, seq) from None
        kernels = mosaic_dump.kernels(dump, since=before) if dump else []
        return compiled, kernels

    fwd, _ = compile_and_read(forward, x, x, x)
    fwd_bwd, dumped = compile_and_read(forward_backward, x, x, x, x)
    cost, fwd_flops = fwd_bwd.cost_analysis(), fwd.cost_analysis()["flops"]
    flops, nbytes = cost["flops"], cost["bytes accessed"]
    declared = est.declared_kernel_costs(fwd_bwd.as_text())
    # Glue: the ops outside the kernels, for every backend; XLA counts a kernel without a declared cost as
    # 0 FLOPs and 0 bytes (tests/bench/test_hlo_glue.py), so nothing of splash's is in it.
    glue_flops = flops - sum(f for f, _ in declared.values())
    glue_bytes = nbytes - sum(b for _, b in declared.values())
    masks = _splash_masks(pattern, seq, backend) if backend in SPLASH_BACKENDS else {}
    if masks:  # undeclared kernels: counted from the masks, by phase
        by_phase = _splash_costs(args, masks, splash_blocks or ((128, 128),) * len(masks))
        phase = {k.name: next(p for p in ("dkv", "dq", "fwd") if f"_{p}" in k.name) for k in dumped}
        declared = {name: by_phase[p] for name, p in phase.items()}
        flops += sum(f for f, _ in declared.values())
        nbytes += sum(b for _, b in declared.values())
        fwd_flops += by_phase["fwd"][0]
    kernel_flops = sum(f for f, _ in declared.values())
    kernel_bytes = sum(b for _, b in declared.values())
    row = _densities(args, pattern, seq, backend, splash_blocks) | {
        "fwd_gflop": fwd_flops / 1e9,
        "fwd_bwd_gflop": flops / 1e9,
        "fwd_bwd_gbytes": nbytes / 1e9,  # the whole op: kernels + glue
        "kernel_gbytes": kernel_bytes / 1e9,
        "glue_gbytes": glue_bytes / 1e9,
        "kernel_gflop": kernel_flops / 1e9,
        "glue_gflop": glue_flops / 1e9,
        "code_mbytes": fwd_bwd.memory_analysis().generated_code_size_in_bytes / 1e6,
        # Glue by kind, per op as XLA counts it (hlo_glue.py): prefetch, relayout, gather, compute.
        "glue_gbytes_by_kind": hlo_glue.glue_by_kind(fwd_bwd.as_text()),
    }
    if block_sizes is not None and backend == "jax_splash":
        row["block_sizes"] = _block_sizes_dict(block_sizes[0])
    elif block_sizes is not None:  # one splash call per component: {component: BlockSizes fields}
        row["block_sizes"] = {name: _block_sizes_dict(b) for name, b in zip(masks, block_sizes)}
    if dump is None or (declared and not dumped):  # libtpu started before the dump was asked for
        return row
    kernels = []
    for name in dict.fromkeys(k.name for k in dumped):  # one record per kernel name, its calls summed
        calls = [k for k in dumped if k.name == name]
        ops = [est.vector_ops_per_step(k.llo) for k in calls]
        kernel = est.KernelCost(
            name,
            *declared.get(name, (0.0, 0.0)),
            grid_steps=sum(k.grid_steps for k in calls),
            vector_ops=sum(o * k.grid_steps for o, k in zip(ops, calls)),
        )
        kernels.append(kernel)
        row.setdefault("kernels", {})[name] = {
            "calls": len(calls),
            "grid_steps": kernel.grid_steps,
            "vector_ops_per_step": max(ops),
            "llo_lines": max(k.llo.count("\n") for k in calls),  # the final kernel program's length
            "est_ms": kernel.ms(topology),
        }
    kernel_ms = sum(k.ms(topology) for k in kernels)
    glue_ms = est.glue_ms(max(glue_flops, 0.0), max(glue_bytes, 0.0), topology)
    return row | {
        "grid_steps_fwd": sum(v["grid_steps"] for n, v in row.get("kernels", {}).items() if "fwd" in n),
        "grid_steps": sum(k.grid_steps for k in kernels),  # forward + backward program
        "vector_ops": sum(k.vector_ops for k in kernels),
        "step_us": est.TPU_STEP_US,
        "kernel_ms": kernel_ms,
        "glue_ms": glue_ms,
        "est_ms": kernel_ms + glue_ms,
    }


def _best_splash(
    args: argparse.Namespace,
    pattern,
    seq: int,
    device,
    topology: str,
    dump: str | None,
    backend: str = "jax_splash",
) -> dict:
    """A splash backend at its best block sizes, each splash call (the whole mask, or one per component)
    swept on its own. The sweep ranks every configuration, first without a vector term; the best is
    compiled, its vector ops per computed score are read from its kernels, the sweep is ranked again with
    them, and so on until the best is one already compiled (at most SPLASH_COMPILED compiles). The compiled
    configuration with the lowest est_ms is reported, with the sweep's size and candidates."""
    masks = _splash_masks(pattern, seq, backend)
    compiled: dict[tuple, dict] = {}
    ops_per_score = 0.0
    while True:
        ranked = [_splash_sweep(args, mask, topology, ops_per_score) for mask in masks.values()]
        blocks = tuple(configurations[0][1] for configurations in ranked)
        if blocks in compiled or len(compiled) == SPLASH_COMPILED:
            break
        row = _compiled_cost(args, pattern, seq, backend, device, topology, dump, blocks)
        compiled[blocks] = row
        if "vector_ops" not in row:
            break
        ops_per_score = row["vector_ops"] / (3 * _splash_scores(args, masks, blocks))
    best = min(compiled.values(), key=lambda r: r.get("est_ms", 0.0))

    def named(blocks: tuple) -> list | dict:
        if backend == "jax_splash":
            return list(blocks[0])
        return {name: list(b) for name, b in zip(masks, blocks)}

    best["sweep"] = {
        "configurations": sum(len(configurations) for configurations in ranked),
        "compiled": [[named(b), r.get("est_ms")] for b, r in compiled.items()],
    }
    return best


def _blocks_note(block_sizes: dict | None) -> str:
    """A splash row's block sizes as block_q/block_kv/block_kv_compute, per component where it has some."""
    if not block_sizes:
        return ""

    def edges(b: dict) -> str:
        return f"{b['block_q']}/{b['block_kv']}/{b['block_kv_compute']}"

    if "block_q" in block_sizes:
        return f"  blocks q/kv/kv_compute {edges(block_sizes)}"
    return "  blocks q/kv/kv_compute " + ", ".join(f"{n} {edges(b)}" for n, b in block_sizes.items())


def _print_cost_table(rows: list[dict], topology: str) -> None:
    print(f"compiled cost analysis for one chip of {topology} (no timing)")
    if any("est_ms" in r for r in rows):
        print(
            "est_ms = kernels (per kernel max(FLOPs / peak, bytes / HBM bandwidth, vector ops / vector "
            f"rate) + grid_steps x {rows[0].get('step_us', 0.35)} us) "
            "+ glue (max(FLOPs / peak, bytes / bandwidth))"
        )
    print(
        f"{'pattern':<16}{'seq':>6} {'backend':<22}{'density':>9}{'fwd+bwd_GF':>12}"
        f"{'GB':>8}{'kern_GB':>9}{'glue_GB':>9}{'code_MB':>9}{'steps':>8}{'kern_ms':>9}{'glue_ms':>9}"
        f"{'est_ms':>8}{'vs_splash':>11}"
    )
    for r in rows:
        est = (
            f"{r['grid_steps']:>8}{r['kernel_ms']:>9.3f}{r['glue_ms']:>9.3f}{r['est_ms']:>8.3f}"
            if "est_ms" in r
            else f"{'':>34}"
        )
        ratio = f"{r['est_ms_ratio_vs_jax_splash']:>11.2f}" if "est_ms_ratio_vs_jax_splash" in r else ""
        note = _blocks_note(r.get("block_sizes"))
        print(
            f"{r['pattern']:<16}{r['seq']:>6} {r['backend']:<22}{r['density']:>9.4f}"
            f"{r['fwd_bwd_gflop']:>12.2f}"
            f"{r['fwd_bwd_gbytes']:>8.3f}{r['kernel_gbytes']:>9.3f}{r['glue_gbytes']:>9.3f}"
            f"{r['code_mbytes']:>9.2f}{est}{ratio}{note}"
        )


def _print_table(rows: list[dict]) -> None:
    header = (
        f"{'pattern':<16}{'seq':>6} {'backend':<22}{'pattern_d':>10}{'density':>9}{'fwd_ms':>10}"
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
            f"{r['pattern']:<16}{r['seq']:>6} {r['backend']:<22}"
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

    if "jax_cudnn" in backends and (args.topology or jax.default_backend() != "gpu"):
        raise UserError(
            f"backend jax_cudnn is cuDNN's attention and runs on an NVIDIA GPU only; this run is on "
            f"{args.topology or jax.default_backend()}: leave it out of --backends"
        )
    if "jax_splash_components" in backends:
        for seq in seqs:
            if seq % args.stride:
                raise UserError(
                    f"backend jax_splash_components needs every --seq a multiple of --stride "
                    f"({args.stride}), got {seq}: leave it out of --backends or change the length"
                )
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
                    _best_splash(args, pattern, seq, device, topology, dump, backend)
                    if backend in SPLASH_BACKENDS
                    else _compiled_cost(args, pattern, seq, backend, device, topology, dump)
                    for backend in backends
                ]
            else:
                group = [measure(args, pattern, seq, backend) for backend in backends]
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
