"""Which JAX backend a command uses when the user has not said (`JAX_PLATFORMS` unset).

The `test` and `tpu` extras install libtpu. On a machine without TPU chips JAX then probes for one at
start-up and prints a page of libtpu warnings before falling back to the CPU. Only TPU VMs have the
accelerator device files, so without them (and without NVIDIA GPUs) the CPU is chosen up front.
Ahead-of-time compiles for TPU topologies do not need the TPU backend: they call libtpu directly.
"""

from __future__ import annotations

import glob
import importlib.util
import pkgutil
import traceback
from collections.abc import Mapping, MutableMapping

ACCELERATOR_DEVICE_GLOBS: tuple[str, ...] = ("/dev/accel*", "/dev/vfio/[0-9]*", "/dev/nvidia[0-9]*")


def has_accelerator_device_files() -> bool:
    """Whether this machine shows a TPU or NVIDIA GPU device file (cheap: no JAX, no libtpu)."""
    return any(glob.glob(pattern) for pattern in ACCELERATOR_DEVICE_GLOBS)


def default_to_cpu_without_accelerators(environ: MutableMapping[str, str]) -> None:
    """Sets JAX_PLATFORMS=cpu in `environ` when it is unset and no TPU or GPU device file exists."""
    if "JAX_PLATFORMS" not in environ and not has_accelerator_device_files():
        environ["JAX_PLATFORMS"] = "cpu"


def backend_failure(err: BaseException, environ: Mapping[str, str]) -> str | None:
    """One line for JAX failing to start the backend JAX_PLATFORMS names (a bare AssertionError or a
    RuntimeError from JAX's backend set-up); None for any other error."""
    requested = environ.get("JAX_PLATFORMS", "")
    frames = traceback.extract_tb(err.__traceback__)
    if not requested or not frames or not frames[-1].filename.endswith("xla_bridge.py"):
        return None
    installed = ", ".join(installed_platforms())
    detail = str(err).split(" (set JAX_PLATFORMS")[0].strip()
    return (
        f"JAX_PLATFORMS={requested} asks for a platform JAX cannot start on this machine"
        f"{f' ({detail})' if detail else ''}; platforms this JAX has: {installed}; unset JAX_PLATFORMS "
        "to let JAX choose, or name one this machine has (e.g. JAX_PLATFORMS=cpu)"
    )


def installed_platforms() -> list[str]:
    """The platforms this JAX installation can offer: the CPU, TPU with libtpu, and each PJRT plugin
    package (`jax_plugins.xla_cuda12` -> cuda), read from what is installed, not from JAX's internals."""
    names = ["cpu"] + (["tpu"] if importlib.util.find_spec("libtpu") else [])
    plugins = importlib.util.find_spec("jax_plugins")  # a namespace package; found without importing it
    if plugins is not None and plugins.submodule_search_locations:
        for plugin in pkgutil.iter_modules(plugins.submodule_search_locations):
            kind = next((k for k in ("cuda", "rocm", "tpu", "metal") if k in plugin.name), plugin.name)
            if kind not in names:
                names.append(kind)
    return names
