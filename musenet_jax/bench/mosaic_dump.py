"""Read the Mosaic TPU kernels that libtpu compiled: grid (iteration_bounds), memref types, transposes.

libtpu writes every Mosaic kernel it compiles, at each pass, into a directory when started with
`LIBTPU_INIT_ARGS=--xla_mosaic_dump_to=DIR`. That works for ahead-of-time compiles from a CPU host too
(no TPU needed). libtpu reads the variable once, when the TPU backend or a topology is first created in
the process, so `enable()` must run before that (e.g. at the start of a benchmark, or in a fresh
subprocess for tests). Files are named `<kernel id>-<pass number>-mosaic-dump-<...>-<pass name>.txt`;
pass 0001 ("original") carries `iteration_bounds = array<i64: ...>` (the grid) and the function name
(the pallas_call's `name`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path

FLAG = "--xla_mosaic_dump_to"
_ENV = "LIBTPU_INIT_ARGS"
_FILE = re.compile(r"^(\d+)-(\d{4})-mosaic-dump-(.*)\.txt$")
_BOUNDS = re.compile(r"iteration_bounds = array<i64: ([0-9, ]+)>")
_FUNC = re.compile(r"func\.func @([A-Za-z0-9_]+)\(")


@dataclasses.dataclass(frozen=True)
class MosaicKernel:
    """One compiled Mosaic kernel as read back from the dump."""

    kernel_id: str
    name: str
    iteration_bounds: tuple[int, ...]
    original: str  # the module as Pallas emitted it (memref types, tiled layouts follow in later passes)
    lowered: str  # after apply-vector-layout: what Mosaic actually emits (inserted transposes show here)
    llo: str  # the final low-level program (each vector transpose is a series of `llo.vxpose` ops)

    @property
    def grid_steps(self) -> int:
        return math.prod(self.iteration_bounds)

    @property
    def transposes(self) -> int:
        """tpu.transpose ops after vector layout (Mosaic inserts one per transposed-LHS matmul)."""
        return self.lowered.count("tpu.transpose")

    @property
    def vxposes(self) -> int:
        """Transpose-unit instructions in the final program."""
        return len(re.findall(r"llo\.vxpose\b(?!_)", self.llo))


def dump_dir() -> str | None:
    """The dump directory libtpu was (or will be) started with, from LIBTPU_INIT_ARGS."""
    match = re.search(re.escape(FLAG) + r"=(\S+)", os.environ.get(_ENV, ""))
    return match.group(1) if match else None


def enable(directory: str | os.PathLike) -> str:
    """Ask libtpu to dump Mosaic kernels into `directory` (if no dump directory is set yet) and return the
    directory in effect. Only takes effect if libtpu has not started in this process yet."""
    import jax

    # A program served from JAX's persistent compilation cache (JAX_COMPILATION_CACHE_DIR) is not compiled
    # again, so Mosaic would dump nothing for it: this process compiles afresh.
    jax.config.update("jax_enable_compilation_cache", False)
    current = dump_dir()
    if current is not None:
        return current
    Path(directory).mkdir(parents=True, exist_ok=True)
    os.environ[_ENV] = f"{os.environ.get(_ENV, '')} {FLAG}={directory}".strip()
    return str(directory)


def snapshot(directory: str | os.PathLike) -> frozenset[str]:
    """File names in the dump directory now (to attribute the kernels of the next compile)."""
    path = Path(directory)
    return frozenset(p.name for p in path.iterdir()) if path.is_dir() else frozenset()


def kernels(directory: str | os.PathLike, *, since: frozenset[str] = frozenset()) -> list[MosaicKernel]:
    """The kernels dumped into `directory` whose files are not in `since`, in compile order."""
    passes: dict[str, dict[int, tuple[str, Path]]] = {}
    for path in Path(directory).iterdir():
        match = _FILE.match(path.name)
        if match is None or path.name in since:
            continue
        kernel_id, number, pass_name = match.groups()
        passes.setdefault(kernel_id, {})[int(number)] = (pass_name, path)
    found = []
    for kernel_id in sorted(passes, key=int):
        by_number = passes[kernel_id]
        if 1 not in by_number:  # only deserialized (a cache hit / re-read), not compiled here
            continue
        original = by_number[1][1].read_text()
        bounds = _BOUNDS.search(original)
        func = _FUNC.search(original)
        applied = [n for n, (name, _) in by_number.items() if "apply-vector-layout" in name]
        lowered = by_number[max(applied)][1].read_text() if applied else original
        llo = by_number[max(by_number)][1].read_text() if "llo" in by_number[max(by_number)][0] else ""
        found.append(
            MosaicKernel(
                kernel_id=kernel_id,
                name=func.group(1) if func else "?",
                iteration_bounds=tuple(int(x) for x in bounds.group(1).split(",")) if bounds else (),
                original=original,
                lowered=lowered,
                llo=llo,
            )
        )
    return found
