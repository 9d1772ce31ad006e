"""A sweep of Triton compiler params for the GPU kernels: every triton_tuning.CANDIDATES pair, per kernel.

Each kernel kind is timed on its own key with the other two at their table values: the forward alone for
"fwd", the backward (dq and dk/dv kernels together) for "dq" and "dkv". The input is one component of the
strided pattern at the model's attention shape. `best_params` picks the fastest candidate per key, and
triton_tuning.table_lines prints it as TABLE lines (`musenet-jax bench device --tune-gpu`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from musenet_jax.errors import one_line
from pallas_kernels.triton_tuning import CANDIDATES, TritonParams, TuneKey


@dataclass(frozen=True)
class TuneShape:
    """Where the sweep times the kernels."""

    seq: int
    heads: int
    head_dims: tuple[int, ...]
    dtypes: tuple[str, ...]
    stride: int = 128
    block: int = 128
    repeats: int = 5
    candidates: tuple[TritonParams, ...] = CANDIDATES


def _best_ms(fn: Callable, args: tuple, repeats: int) -> float:
    import jax

    jax.block_until_ready(fn(*args))  # compile
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def sweep(shape: TuneShape, *, interpret: bool, keep_going: Callable[[], bool]) -> Iterator[dict]:
    """One row per (key, candidate): the key's fields, num_warps, num_stages, and ms or an error (a
    candidate Triton cannot compile, e.g. out of shared memory). Stops early when `keep_going()` is false."""
    import jax
    import jax.numpy as jnp

    from musenet_jax.attention import patterns as P
    from musenet_jax.attention.backends import backend_layout
    from pallas_kernels import flash_gpu
    from pallas_kernels.triton_tuning import overriding

    layout = backend_layout(P.strided(shape.stride), shape.seq, backend="pallas", block_size=shape.block)
    layout = layout.components[0].layout
    for dtype in shape.dtypes:
        for dim in shape.head_dims:
            keys = jax.random.split(jax.random.key(dim), 4)
            q, k, v, do = (
                jax.random.normal(key, (1, shape.seq, shape.heads, dim), jnp.dtype(dtype)) for key in keys
            )
            stats = jnp.zeros((1, shape.heads, shape.seq), jnp.float32)
            for kind, key in flash_gpu.tune_keys(layout, dim, dtype).items():
                for params in shape.candidates:
                    if not keep_going():
                        return
                    row = {**key._asdict(), **params._asdict()}
                    with overriding({key: params}):
                        # A new function per candidate: jit would reuse the trace of an earlier one.
                        if kind == "fwd":
                            fn = jax.jit(
                                lambda q, k, v: flash_gpu.forward(q, k, v, layout, interpret=interpret)
                            )
                            args = (q, k, v)
                        else:
                            fn = jax.jit(
                                lambda q, k, v, do, s: flash_gpu.backward(
                                    q, k, v, do, s, s, layout, interpret=interpret
                                )
                            )
                            args = (q, k, v, do, stats)
                        try:
                            row["ms"] = _best_ms(fn, args, shape.repeats)
                        except Exception as err:  # noqa: BLE001 - a candidate that fails is a result
                            row["error"] = one_line(err)
                    yield row


def best_params(rows: Iterable[dict]) -> dict[TuneKey, TritonParams]:
    """The fastest timed candidate per key (keys whose every candidate failed are left out)."""
    best: dict[TuneKey, tuple[float, TritonParams]] = {}
    for row in rows:
        if "ms" not in row:
            continue
        key = TuneKey(*(row[f] for f in TuneKey._fields))
        if key not in best or row["ms"] < best[key][0]:
            best[key] = (row["ms"], TritonParams(row["num_warps"], row["num_stages"]))
    return {key: params for key, (_, params) in best.items()}
