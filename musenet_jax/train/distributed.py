"""One program per host: joins the JAX processes of a multi-host run before any device is touched.

Pods and clusters (Cloud TPU VMs, SLURM) describe themselves through their environment, which
`jax.distributed.initialize()` reads on its own (`multihost=True`); a local multi-process run on CPUs
names the coordinator, the process count and this process's id explicitly, and uses gloo collectives.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable

import jax

from musenet_jax.errors import UserError

JOIN_TIMEOUT_S = 300  # how long a process waits for the others (jax.distributed's own default)
# jax's own deadline, later than ours: on reaching it jax aborts the process (a C++ check failure).
_JAX_DEADLINE_MARGIN_S = 60


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


def initialize(
    spec: DistributedSpec, say: Callable[[str], None] = lambda line: print(line, file=sys.stderr)
) -> None:
    """Calls `jax.distributed.initialize` when the run spans several processes; a no-op otherwise. The
    wait for the other processes is said (where, how long) and Ctrl-C ends it.

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
        assert spec.process_id is not None and spec.num_processes is not None
        whom = (
            f"the other {spec.num_processes - 1} process(es) to join at {spec.coordinator}"
            if spec.process_id == 0
            else f"the coordinator (process 0) at {spec.coordinator}"
        )
        say(f"process {spec.process_id} of {spec.num_processes}: waiting up to {JOIN_TIMEOUT_S} s for {whom}")
        _join_interruptibly(
            lambda: jax.distributed.initialize(
                spec.coordinator,
                spec.num_processes,
                spec.process_id,
                initialization_timeout=JOIN_TIMEOUT_S + _JAX_DEADLINE_MARGIN_S,
            ),
            f"no answer from {whom} within {JOIN_TIMEOUT_S} s; start every process with the same "
            "--coordinator and --num-processes (process 0 first), or check that the address is reachable",
        )
    else:
        jax.distributed.initialize()


def _join_interruptibly(join: Callable[[], None], timed_out: str) -> None:
    """Runs the blocking join in a helper thread: the main thread keeps receiving Ctrl-C, which the join's
    C++ wait would otherwise hold back for minutes, and gives up after `JOIN_TIMEOUT_S` with the one line
    `timed_out` (before jax's own deadline, which aborts the process with a stack dump)."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            join()
        except Exception as err:  # jax raises its runtime error type; the text is what the user needs
            failure.append(err)

    thread = threading.Thread(target=target, name="jax-distributed-join", daemon=True)
    thread.start()
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while thread.is_alive() and time.monotonic() < deadline:
        thread.join(0.2)  # KeyboardInterrupt surfaces here, the CLI exits 130 and the daemon thread ends
    if thread.is_alive():
        raise UserError(timed_out)
    if failure:
        text = str(failure[0]).strip()
        raise UserError(f"{timed_out} ({text.splitlines()[0][:200]})" if text else timed_out)
