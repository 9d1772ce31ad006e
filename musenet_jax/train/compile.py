"""Ahead-of-time compile of the full train step for a TPU topology, from any machine with libtpu.

`jax.experimental.topologies.get_topology_desc` describes a TPU slice without having one; the train
step (forward, backward, optimizer update) is lowered with abstract, sharded arguments over a mesh of
those devices and compiled by libtpu. The compiled program says how much memory each device needs, so a
mesh and batch can be checked against the chip's HBM before a pod is rented.

FLOPs: XLA's `cost_analysis` counts the body of a `lax.scan` once, and the layers (and gradient
accumulation) are scans, so its figure is reported as is but `flops_per_step` is analytic: the model
FLOPs of `model/info.py` (6 x matmul parameters + attention over the allowed pairs, per token) times
the tokens of a step, the same numerator as MFU (rematerialization not counted).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import time
from typing import Any

import jax

from musenet_jax.config import Config
from musenet_jax.errors import UserError, unknown_choice
from musenet_jax.hardware import HBM_GIB_PER_CHIP
from musenet_jax.model.info import count_parameters, flops_per_token
from musenet_jax.model.sharding import make_mesh
from musenet_jax.train.setup import make_train_setup
from musenet_jax.train.step import jit_train_step

GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class CompileReport:
    """Per-device memory of the compiled train step and the step's FLOPs (all devices)."""

    config: str
    topology: str
    device_kind: str
    num_devices: int
    mesh: dict[str, int]
    global_batch: int
    grad_accum_steps: int
    context: int
    attention: str
    parameters: int
    argument_bytes: int
    output_bytes: int
    alias_bytes: int  # outputs written in place of donated arguments (the train state)
    temp_bytes: int
    generated_code_bytes: int
    per_device_total_bytes: int  # arguments + outputs - aliased + temporaries + code
    hbm_bytes: int  # per device
    flops_per_step: float  # analytic model FLOPs of one step, all devices
    flops_source: str
    xla_flops_per_device: float  # cost_analysis: every scanned body counted once
    lower_s: float
    compile_s: float

    @property
    def fits(self) -> bool:
        return self.per_device_total_bytes <= self.hbm_bytes

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"fits": self.fits}


def _quiet_libtpu_probe() -> None:
    """Without a local TPU, libtpu looks for one (metadata server, worker names) and prints pages of
    warnings, and only one process at a time may load it; these settings tell it there is no TPU to
    guard, so several compiles (or test processes) can run side by side. A TPU machine is left alone."""
    if any(pathlib.Path("/dev").glob("accel*")) or pathlib.Path("/dev/vfio").exists():
        return
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5p-8")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")


def topology_devices(topology: str) -> list[Any]:
    """The devices of a TPU slice named like `v5p:4x4x4` or `v5e:2x2` (none need exist)."""
    generation = topology.split(":", 1)[0]
    if generation not in HBM_GIB_PER_CHIP:
        raise unknown_choice("TPU generation", generation, HBM_GIB_PER_CHIP)
    if not re.fullmatch(r"[a-z0-9]+:\d+(x\d+){1,2}", topology):
        raise UserError(f"topology {topology!r}: expected GENERATION:AxB or GENERATION:AxBxC, e.g. v5p:4x4x4")
    _quiet_libtpu_probe()
    from jax.experimental import topologies

    try:
        return list(topologies.get_topology_desc(topology, "tpu").devices)
    except Exception as err:  # libtpu's reasons (bad shape for the generation, ...) as one line
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"topology {topology!r}: {reason}") from None


def hbm_bytes_per_device(topology: str, devices: list[Any]) -> int:
    chips = len({tuple(getattr(d, "coords", (d.id,))) for d in devices})
    return HBM_GIB_PER_CHIP[topology.split(":", 1)[0]] * GIB * chips // len(devices)


def compile_train_step(cfg: Config, topology: str) -> CompileReport:
    """AOT-compiles `cfg`'s train step for `topology` with the config's mesh sizes and global batch."""
    devices = topology_devices(topology)
    mesh = make_mesh(cfg.mesh, devices)
    setup = make_train_setup(cfg, mesh)
    vocab_size = setup.vocab_size
    state, batch = setup.abstract_state(), setup.abstract_batch()
    step = jit_train_step(setup)
    start = time.perf_counter()
    with jax.set_mesh(mesh):
        lowered = step.lower(state, batch)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    compiled_at = time.perf_counter()

    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    total = (
        memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        - memory.alias_size_in_bytes
        + memory.temp_size_in_bytes
        + memory.generated_code_size_in_bytes
    )
    tokens = cfg.train.global_batch * cfg.model.context
    return CompileReport(
        config=cfg.name,
        topology=topology,
        device_kind=devices[0].device_kind,
        num_devices=len(devices),
        mesh=dict(mesh.shape),
        global_batch=cfg.train.global_batch,
        grad_accum_steps=cfg.train.grad_accum_steps,
        context=cfg.model.context,
        attention=cfg.model.attention,
        parameters=count_parameters(cfg.model, setup.tokenizer.vocab),
        argument_bytes=memory.argument_size_in_bytes,
        output_bytes=memory.output_size_in_bytes,
        alias_bytes=memory.alias_size_in_bytes,
        temp_bytes=memory.temp_size_in_bytes,
        generated_code_bytes=memory.generated_code_size_in_bytes,
        per_device_total_bytes=total,
        hbm_bytes=hbm_bytes_per_device(topology, devices),
        flops_per_step=flops_per_token(cfg.model, vocab_size) * tokens,
        flops_source="analytic: (6 x matmul params + attention over allowed pairs) x tokens; no remat",
        xla_flops_per_device=float((cost or {}).get("flops", 0.0)),
        lower_s=lowered_at - start,
        compile_s=compiled_at - lowered_at,
    )
