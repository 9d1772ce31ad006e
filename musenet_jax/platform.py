"""Which JAX backend a command uses when the user has not said (`JAX_PLATFORMS` unset).

The `test` and `tpu` extras install libtpu. On a machine without TPU chips JAX then probes for one at
start-up and prints a page of libtpu warnings before falling back to the CPU. Only TPU VMs have the
accelerator device files, so without them (and without NVIDIA GPUs) the CPU is chosen up front.
Ahead-of-time compiles for TPU topologies do not need the TPU backend: they call libtpu directly.
"""

from __future__ import annotations

import glob
from collections.abc import MutableMapping

ACCELERATOR_DEVICE_GLOBS: tuple[str, ...] = ("/dev/accel*", "/dev/vfio/[0-9]*", "/dev/nvidia[0-9]*")


def has_accelerator_device_files() -> bool:
    """Whether this machine shows a TPU or NVIDIA GPU device file (cheap: no JAX, no libtpu)."""
    return any(glob.glob(pattern) for pattern in ACCELERATOR_DEVICE_GLOBS)


def default_to_cpu_without_accelerators(environ: MutableMapping[str, str]) -> None:
    """Sets JAX_PLATFORMS=cpu in `environ` when it is unset and no TPU or GPU device file exists."""
    if "JAX_PLATFORMS" not in environ and not has_accelerator_device_files():
        environ["JAX_PLATFORMS"] = "cpu"
