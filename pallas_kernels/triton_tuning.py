"""Triton compiler params (num_warps, num_stages) of the GPU kernels: one table, a safe default, an override.

`TABLE` is keyed by kernel kind ("fwd", "dq", "dkv"), the program's tile (block_q x block_k: the forward's
layout block, the dq program's BACKWARD_TILE query rows x a layout key block, the dk/dv program's layout
query block x BACKWARD_TILE keys), the (padded) head_dim and the dtype name. Its values are H100 starting
points, not yet measured: 4 warps at head_dim <= 64 and 8 above (JAX's Pallas GPU flash attention), 3
pipeline stages for bf16 (Triton's fused-attention tutorial on Hopper uses 3-4), fewer for float32 and wide
heads, whose streamed tiles take twice the shared memory per stage (at float32 and head_dim 128 one stage
already holds 128 KiB).

Filling it from a sweep on a GPU: `musenet-jax bench device --tune-gpu --out tune.json` times every
CANDIDATES pair for each key at the model's attention shape and prints the best as `TABLE` lines to paste
here (the JSON keeps every timing). A key not in the table gets `default_params`, which keeps
`num_stages x` the streamed tiles within SAFE_SHARED_MEMORY (any recent NVIDIA GPU has more).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Literal, NamedTuple

KernelKind = Literal["fwd", "dq", "dkv"]
KERNEL_KINDS: tuple[KernelKind, ...] = ("fwd", "dq", "dkv")


class TuneKey(NamedTuple):
    kind: KernelKind
    block_q: int  # the program's query rows
    block_k: int  # the program's keys
    head_dim: int
    dtype: str  # numpy dtype name of q, k, v


class TritonParams(NamedTuple):
    num_warps: int
    num_stages: int


# H100 starting values (see the module docstring); the forward's tile is the 128 x 128 layout block, the
# backward's 64 x 128 (dq) and 128 x 64 (dk/dv) with flash_gpu.BACKWARD_TILE = 64.
TABLE: dict[TuneKey, TritonParams] = {
    TuneKey("fwd", 128, 128, 32, "bfloat16"): TritonParams(4, 3),
    TuneKey("fwd", 128, 128, 64, "bfloat16"): TritonParams(4, 3),
    TuneKey("fwd", 128, 128, 128, "bfloat16"): TritonParams(8, 3),
    TuneKey("fwd", 128, 128, 64, "float32"): TritonParams(4, 2),
    TuneKey("fwd", 128, 128, 128, "float32"): TritonParams(8, 1),
    TuneKey("dq", 64, 128, 32, "bfloat16"): TritonParams(4, 3),
    TuneKey("dq", 64, 128, 64, "bfloat16"): TritonParams(4, 3),
    TuneKey("dq", 64, 128, 128, "bfloat16"): TritonParams(8, 2),
    TuneKey("dq", 64, 128, 64, "float32"): TritonParams(4, 2),
    TuneKey("dq", 64, 128, 128, "float32"): TritonParams(8, 1),
    TuneKey("dkv", 128, 64, 32, "bfloat16"): TritonParams(4, 3),
    TuneKey("dkv", 128, 64, 64, "bfloat16"): TritonParams(4, 3),
    TuneKey("dkv", 128, 64, 128, "bfloat16"): TritonParams(8, 2),
    TuneKey("dkv", 128, 64, 64, "float32"): TritonParams(4, 2),
    TuneKey("dkv", 128, 64, 128, "float32"): TritonParams(8, 1),
}

# What a sweep tries per key: every pair of these.
CANDIDATES: tuple[TritonParams, ...] = tuple(TritonParams(w, s) for w in (4, 8) for s in (1, 2, 3, 4))

# Shared memory the default lets the pipelined tiles take: below every recent NVIDIA GPU's per-block limit
# (A100 164 KiB, H100 227 KiB, L4 99 KiB), so an untuned shape still compiles.
SAFE_SHARED_MEMORY = 96 * 1024

_overrides: dict[TuneKey, TritonParams] = {}


def streamed_bytes(key: TuneKey) -> int:
    """Shared memory one pipeline stage takes: the two tiles a program's block loop streams (k and v for
    the forward and dq, which loop over key blocks; q and dout for dk/dv, which loop over query blocks)."""
    rows = key.block_q if key.kind == "dkv" else key.block_k
    itemsize = {"float32": 4, "float64": 8}.get(key.dtype, 2)
    return 2 * rows * key.head_dim * itemsize


def default_params(key: TuneKey) -> TritonParams:
    """A safe choice for a key the table lacks: 4 warps up to a 128 x 128 tile at head_dim <= 64 (8
    beyond), and the most stages (up to 2) whose streamed tiles fit SAFE_SHARED_MEMORY (at least 1)."""
    work = key.block_q * key.block_k * max(key.head_dim, 64) // 64
    num_warps = 4 if work <= 128 * 128 else 8
    stages = max(1, min(2, SAFE_SHARED_MEMORY // streamed_bytes(key)))
    return TritonParams(num_warps, stages)


def lookup(key: TuneKey) -> TritonParams:
    """The params the kernels compile with: an active override, else the table, else the default."""
    return _overrides.get(key) or TABLE.get(key) or default_params(key)


@contextlib.contextmanager
def overriding(params: Mapping[TuneKey, TritonParams]) -> Iterator[None]:
    """Kernels traced inside compile with these params (the sweep's candidates); restored on exit."""
    saved = dict(_overrides)
    _overrides.update(params)
    try:
        yield
    finally:
        _overrides.clear()
        _overrides.update(saved)


def table_lines(best: Mapping[TuneKey, TritonParams]) -> list[str]:
    """`TABLE` entries as Python source lines, sorted, ready to paste into this module."""
    return [
        f"    TuneKey({k.kind!r}, {k.block_q}, {k.block_k}, {k.head_dim}, {k.dtype!r}): "
        f"TritonParams({p.num_warps}, {p.num_stages}),"
        for k, p in sorted(best.items(), key=lambda item: (KERNEL_KINDS.index(item[0].kind), *item[0][1:]))
    ]
