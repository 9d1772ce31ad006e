"""Model FLOPs per token and device peak FLOP/s: the two halves of MFU.

MFU = achieved model FLOP/s / peak FLOP/s. Model FLOPs count what the architecture needs, not what
the hardware ends up doing: the matmuls (6 x matmul parameters per token for forward + backward,
the PaLM convention) plus attention over the key positions the sparse pattern allows; recomputation
(remat) and the blocks wasted by the block-sparse layout are not useful work and do not count.
Peak FLOP/s comes from the accelerator's data sheet, or, for a CPU (or an unknown chip), from a
matmul measured on the spot.
"""

from __future__ import annotations

import time
from typing import Any

from musenet_jax.model.config import ModelConfig

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


def attention_pairs_per_query(cfg: ModelConfig) -> float:
    """Mean number of keys a query attends to, averaged over layers and head groups."""
    from musenet_jax.attention.layouts import make_layout
    from musenet_jax.attention.patterns import layer_patterns

    total = 0.0
    for layer in range(cfg.n_layers):
        groups = layer_patterns(
            cfg.patterns, cfg.pattern_layout, layer, stride=cfg.stride, summary=cfg.fixed_summary
        )
        pairs = [make_layout(p, cfg.context, cfg.block_size).allowed_pairs for p in groups]
        total += sum(pairs) / len(pairs) / cfg.context
    return total / cfg.n_layers


def flops_per_token(cfg: ModelConfig, vocab_size: int) -> float:
    """Training (forward + backward) model FLOPs per token of a `context`-long sequence."""
    d = cfg.d_model
    per_layer_matmul_params = 4 * d * d + 2 * cfg.mlp_ratio * d * d  # q, k, v, out + the MLP
    matmul_params = cfg.n_layers * per_layer_matmul_params + d * vocab_size  # + the output projection
    # Q.K^T and P.V: 2 matmuls x 2 FLOPs x d per allowed pair, forward; backward doubles it twice over.
    attention = 12 * d * cfg.n_layers * attention_pairs_per_query(cfg)
    return 6.0 * matmul_params + attention


def measure_matmul_flops(device: Any, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a float32 [size x size] matmul on `device` (best of `repeats`): a CPU's usable peak."""
    import jax
    import jax.numpy as jnp

    a = jax.device_put(jnp.ones((size, size), jnp.float32), device)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def data_sheet_peak(device_kind: str) -> float | None:
    """Dense bf16 peak FLOP/s of one accelerator of this kind, if it is in the table."""
    for name, flops in PEAK_FLOPS_BY_KIND:
        if name.lower() in device_kind.lower():
            return flops
    return None


def total_peak_flops() -> tuple[float, str]:
    """(peak FLOP/s of all devices of the run, where the figure comes from).

    Accelerators: the data sheet times the device count. CPU "devices" (fake or not) share their host's
    cores, so one matmul measures a whole host, and the total is that times the number of hosts.
    """
    import jax

    device = jax.local_devices()[0]
    per_device = data_sheet_peak(getattr(device, "device_kind", ""))
    if per_device is not None:
        return per_device * jax.device_count(), f"data sheet ({device.device_kind} x {jax.device_count()})"
    per_host = measure_matmul_flops(device)
    return per_host * jax.process_count(), f"measured fp32 matmul ({device.platform} x {jax.process_count()} hosts)"
