"""One program per host: joins the JAX processes of a multi-host run before any device is touched.

Pods and clusters (Cloud TPU VMs, SLURM) describe themselves through their environment, which
`jax.distributed.initialize()` reads on its own (`multihost=True`); a local multi-process run on CPUs
names the coordinator, the process count and this process's id explicitly, and uses gloo collectives.
"""

from __future__ import annotations

import dataclasses

import jax

from musenet_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class DistributedSpec:
    """How this process joins the others; the default (nothing set) is a single-process run."""

    coordinator: str | None = None  # HOST:PORT of process 0
    num_processes: int | None = None
    process_id: int | None = None
    multihost: bool = False  # let JAX detect the cluster (TPU pod, SLURM) from the environment

    @property
    def explicit(self) -> bool:
        return self.coordinator is not None or self.num_processes is not None or self.process_id is not None


def initialize(spec: DistributedSpec) -> None:
    """Calls `jax.distributed.initialize` when the run spans several processes; a no-op otherwise.

    Must run before anything creates a JAX backend (device lists, arrays), which is why the CLI calls
    it first thing.
    """
    if not spec.explicit and not spec.multihost:
        return
    if spec.explicit:
        missing = [
            flag
            for flag, value in (
                ("--coordinator", spec.coordinator),
                ("--num-processes", spec.num_processes),
                ("--process-id", spec.process_id),
            )
            if value is None
        ]
        if missing:
            raise UserError(f"a multi-process run needs {', '.join(missing)} as well")
        assert spec.num_processes is not None and spec.process_id is not None
        if not 0 <= spec.process_id < spec.num_processes:
            raise UserError(f"--process-id {spec.process_id} must be in [0, {spec.num_processes})")
        if ":" not in str(spec.coordinator):
            raise UserError(f"--coordinator {spec.coordinator!r} must be HOST:PORT")
    # CPU processes exchange collectives through gloo; the setting only concerns the CPU backend, so
    # it is harmless on TPU and GPU hosts.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if spec.explicit:
        jax.distributed.initialize(spec.coordinator, spec.num_processes, spec.process_id)
    else:
        jax.distributed.initialize()
