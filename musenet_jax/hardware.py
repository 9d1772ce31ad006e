"""What the chips can do: data-sheet tables (peak FLOP/s, HBM per chip) and a measured CPU peak.

One place for hardware facts, read by MFU reporting, ahead-of-time compiles and benchmarks.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp

# Dense bf16 peak per device (data-sheet figures), matched against `device.device_kind`.
PEAK_FLOPS_BY_KIND: tuple[tuple[str, float], ...] = (
    ("TPU v6", 918e12),
    ("TPU v5p", 459e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12),
    ("TPU v4", 275e12),
    ("TPU v3", 123e12),
    ("H200", 989e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L4", 121e12),
)

# HBM per chip by TPU generation (data sheets), in GiB; a chip's devices (cores) share it evenly.
HBM_GIB_PER_CHIP: dict[str, int] = {"v2": 16, "v3": 32, "v4": 32, "v5e": 16, "v5p": 95, "v6e": 32}
# HBM bandwidth per chip by TPU generation (public figures), bytes/s.
HBM_BYTES_PER_S: dict[str, float] = {"v4": 1228e9, "v5e": 819e9, "v5p": 2765e9, "v6e": 1640e9}
# Peak dense bf16 FLOP/s per chip by TPU generation: the device kinds of PEAK_FLOPS_BY_KIND.
TPU_KIND: dict[str, str] = {
    "v3": "TPU v3",
    "v4": "TPU v4",
    "v5e": "TPU v5e",
    "v5p": "TPU v5p",
    "v6e": "TPU v6",
}
# A fixed cost per grid step of a Pallas TPU kernel (pipeline bookkeeping, DMA issue and wait), as commonly
# put for TPUs; the roofline estimate adds it for every step, so tiny steps cannot hide behind FLOPs.
TPU_STEP_US = 0.35


def data_sheet_peak(device_kind: str) -> float | None:
    """Dense bf16 peak FLOP/s of one accelerator of this kind, if it is in the table."""
    for name, flops in PEAK_FLOPS_BY_KIND:
        if name.lower() in device_kind.lower():
            return flops
    return None


def tpu_chip_peaks(topology: str) -> tuple[float, float]:
    """(peak bf16 FLOP/s, HBM bytes/s) of one chip of a topology named like 'v5p:2x2x1'."""
    generation = topology.split(":")[0].split("-")[0].lower()
    peak = data_sheet_peak(TPU_KIND.get(generation, generation))
    if peak is None or generation not in HBM_BYTES_PER_S:
        raise ValueError(
            f"no peak figures for TPU generation {generation!r}; known: {', '.join(HBM_BYTES_PER_S)}"
        )
    return peak, HBM_BYTES_PER_S[generation]


def estimate_ms(
    flops: float, bytes_accessed: float, grid_steps: int, *, topology: str, step_us: float = TPU_STEP_US
) -> float:
    """A roofline estimate of one TPU kernel run: max(FLOPs / peak, bytes / HBM bandwidth) + grid_steps x
    the per-step cost, in milliseconds."""
    peak, bandwidth = tpu_chip_peaks(topology)
    return max(flops / peak, bytes_accessed / bandwidth) * 1e3 + grid_steps * step_us * 1e-3


def measure_matmul_flops(device: Any, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a float32 [size x size] matmul on `device` (best of `repeats`): a CPU's usable peak."""
    a = jax.device_put(jnp.ones((size, size), jnp.float32), device)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def total_peak_flops() -> tuple[float, str]:
    """(peak FLOP/s of all devices of the run, where the figure comes from).

    Accelerators: the data sheet times the device count. CPU "devices" (fake or not) share their host's
    cores, so one matmul measures a whole host, and the total is that times the number of hosts.
    """
    device = jax.local_devices()[0]
    per_device = data_sheet_peak(getattr(device, "device_kind", ""))
    if per_device is not None:
        return per_device * jax.device_count(), f"data sheet ({device.device_kind} x {jax.device_count()})"
    per_host = measure_matmul_flops(device)
    return (
        per_host * jax.process_count(),
        f"measured fp32 matmul ({device.platform} x {jax.process_count()} hosts)",
    )
