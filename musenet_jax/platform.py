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


def default_to_cpu_without_accelerators(environ: MutableMapping[str, str]) -> None:
    """Sets JAX_PLATFORMS=cpu in `environ` when it is unset and no TPU or GPU device file exists."""
    if "JAX_PLATFORMS" in environ:
        return
    if any(glob.glob(pattern) for pattern in ACCELERATOR_DEVICE_GLOBS):
        return
    environ["JAX_PLATFORMS"] = "cpu"
