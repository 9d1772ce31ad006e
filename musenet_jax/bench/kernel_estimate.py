"""Time estimates for TPU attention programs compiled ahead of time (nothing runs): per kernel a roofline
with a vector-unit term read from the compiled kernel, plus the XLA code around the kernels ("glue").

    kernel_ms = sum over kernels of  max(FLOPs / peak, bytes / HBM bandwidth, vector ops / vector rate)
                                     + grid_steps x TPU_STEP_US
    glue_ms   = max(glue FLOPs / peak, glue bytes / HBM bandwidth)
    est_ms    = kernel_ms + glue_ms          (no overlap assumed between separate ops)

FLOPs and bytes of a kernel are what its `pl.CostEstimate` declares (read from the compiled HLO's custom
calls); kernels that declare none (JAX's splash attention) are counted from their active blocks the way
ours count theirs (`splash_kernel_costs`). Glue is the program's cost analysis minus the kernels'
declared cost: the XLA ops outside the kernels, for every backend (XLA counts a kernel that declares no
cost as 0 FLOPs and 0 bytes). Vector ops are counted in the kernel's final low-level program from libtpu's
Mosaic dump (`vector_ops_per_step`): every vector ALU, compare, select, pack, permute and transcendental
instruction of the heaviest branch one grid step can take, loops multiplied out. The vector rate assumes
VALU_SLOTS vector instructions per cycle per TensorCore at the chip's clock (an assumption, not a data-sheet
figure; `--topology` estimates are only as good as it).
"""

from __future__ import annotations

import dataclasses
import math
import re

from musenet_jax.hardware import TPU_STEP_US, tpu_chip_peaks

# v5p: 2 TensorCores per chip at 1.75 GHz (459 TFLOP/s = 2 cores x 4 MXUs x 128 x 128 x 2 x 1.75 GHz).
TENSORCORES_PER_CHIP = 2
CLOCK_HZ = 1.75e9
VALU_SLOTS = 4  # vector instructions issued per cycle per core (assumed)
VECTOR_OPS_PER_S = TENSORCORES_PER_CHIP * VALU_SLOTS * CLOCK_HZ

# Low-level vector instructions that do not occupy a vector ALU slot: memory, matrix unit, transpose unit,
# reinterpretation.
_NOT_VALU = re.compile(
    r"llo\.(vector_load|vector_store|vbitcast|vmatmul|vmatres|vlatch|vdwg|vxpose|matmul_|gain_latch)"
)
_VECTOR_OP = re.compile(r"\bllo\.v[a-z_]*")
_FOR = re.compile(r"scf\.for %\S+ = (%\S+) to (%\S+) step (%\S+)")
_CONST = re.compile(r"^\s*(%[\w#]+) = (?:llo|arith)\.constant (?:\{value = )?(-?\d+)")
_CUSTOM_CALL = re.compile(r"%([A-Za-z0-9_]+?)(?:\.\d+)? = .*custom_call_target=\"tpu_custom_call\"")
_COST = re.compile(r'cost_estimate\\?":\{\\?"flops\\?":\\?"(\d+)\\?",.*?\\?"bytes_accessed\\?":\\?"(\d+)')


def _main_body(llo: str) -> list[str]:
    """Lines of the kernel function (the first func.func), without its signature and closing brace."""
    lines = llo.splitlines()
    start = next(i for i, line in enumerate(lines) if "func.func @" in line)
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = next(i for i in range(start + 1, len(lines)) if lines[i] == " " * indent + "}")
    return lines[start + 1 : end]


def _count(lines: list[str], constants: dict[str, int], top: bool) -> int:
    """Vector ops of a region: straight-line ops, loops times their trip count, branches at most the
    larger side; at the top level only the heaviest conditional region counts (one grid step takes one
    path: init, full block, partial block or finish)."""
    total, regions, i = 0, [], 0
    while i < len(lines):
        line = lines[i].strip()
        if line.endswith("{") and line.startswith(("scf.if", "scf.for")):
            depth, j, branches, current = 1, i + 1, [], []
            while depth:
                inner = lines[j].strip()
                if inner.startswith("} else {"):
                    if depth == 1:  # the other side of this branch; deeper ones stay in the region
                        branches.append(current)
                        current = []
                    else:
                        current.append(lines[j])
                    j += 1
                    continue
                elif inner.startswith("}"):  # "}" or "} {attributes}"
                    depth -= 1
                elif inner.endswith("{") and inner.startswith("scf."):
                    depth += 1
                if depth:
                    current.append(lines[j])
                j += 1
            branches.append(current)
            cost = max(_count(b, constants, False) for b in branches)
            loop = _FOR.search(line)
            if loop:
                lo, hi, step = (constants.get(x) for x in loop.groups())
                trips = -(-(hi - lo) // step) if None not in (lo, hi, step) else 1
                total += trips * cost
            elif top:
                regions.append(cost)
            else:
                total += cost
            i = j
            continue
        total += sum(1 for op in _VECTOR_OP.findall(line) if not _NOT_VALU.match(op))
        i += 1
    return total + max(regions, default=0)


def vector_ops_per_step(llo: str) -> int:
    """Vector-unit instructions one grid step of a compiled Mosaic kernel issues (its heaviest path)."""
    constants = {m.group(1): int(m.group(2)) for m in map(_CONST.match, llo.splitlines()) if m}
    return _count(_main_body(llo), constants, top=True)


def declared_kernel_costs(hlo: str) -> dict[str, tuple[float, float]]:
    """{kernel name: (FLOPs, bytes)} summed over the Mosaic custom calls of a compiled program's HLO that
    declare a cost estimate."""
    costs: dict[str, tuple[float, float]] = {}
    for line in hlo.splitlines():
        call, cost = _CUSTOM_CALL.search(line), _COST.search(line)
        if call and cost:
            flops, nbytes = costs.get(call.group(1), (0.0, 0.0))
            costs[call.group(1)] = (flops + float(cost.group(1)), nbytes + float(cost.group(2)))
    return costs


def splash_kernel_costs(
    *,
    active_blocks: int,
    block_q: int,
    block_k: int,
    q_len: int,
    k_len: int,
    dim: int,
    programs: int,
    itemsize: int,
) -> dict[str, tuple[float, float]]:
    """{"fwd" | "dq" | "dkv": (FLOPs, bytes)} of a block-sparse flash forward and split backward that
    declare no cost (JAX's splash attention), counted as pallas_kernels.kernel_cost counts ours: per
    active block 2 (forward), 3 (dq) and 4 (dk/dv) block matmuls, the streamed blocks read once per active
    block, the row's own arrays once."""
    area = block_q * block_k

    def kernel(matmuls: int, streamed: int, resident: int) -> tuple[float, float]:
        elements = active_blocks * streamed + resident
        return float(programs * active_blocks * matmuls * 2 * area * dim), float(
            programs * elements * dim * itemsize
        )

    return {
        "fwd": kernel(2, 2 * block_k, 2 * q_len),
        "dq": kernel(3, 2 * block_k, 3 * q_len),
        "dkv": kernel(4, 2 * block_q, 4 * k_len),
    }


@dataclasses.dataclass(frozen=True)
class KernelCost:
    """One kernel (or all calls of one kernel name) of a compiled program."""

    name: str
    flops: float
    nbytes: float
    grid_steps: int
    vector_ops: int  # per program: per-step ops x grid steps

    def ms(self, topology: str) -> float:
        peak, bandwidth = tpu_chip_peaks(topology)
        bound = max(self.flops / peak, self.nbytes / bandwidth, self.vector_ops / VECTOR_OPS_PER_S)
        return bound * 1e3 + self.grid_steps * TPU_STEP_US * 1e-3


def glue_ms(flops: float, nbytes: float, topology: str) -> float:
    """The XLA ops around the kernels, as one roofline (they are bound by bytes at these shapes)."""
    peak, bandwidth = tpu_chip_peaks(topology)
    return max(flops / peak, nbytes / bandwidth) * 1e3


def splash_sweep_ms(
    cost: dict[str, tuple[float, float]], grid_steps: int, vector_ops: float, topology: str
) -> float:
    """The sweep's ranking estimate of a splash configuration before compiling it: per kernel
    max(FLOPs / peak, bytes / bandwidth, vector ops / vector rate), plus the grid steps; `vector_ops` per
    kernel is a projection (ops per computed score measured on a compiled configuration)."""
    peak, bandwidth = tpu_chip_peaks(topology)
    bound = sum(max(f / peak, b / bandwidth, vector_ops / VECTOR_OPS_PER_S) for f, b in cost.values())
    return bound * 1e3 + grid_steps * TPU_STEP_US * 1e-3


def splash_grid_steps(
    seq: int, heads: int, batch: int, block_q: int, block_kv: int, *, kv_seq: int | None = None
) -> int:
    """Splash's forward, dq and dk/dv grids walk every (query block, key block) pair per head (`kv_seq`:
    the key length where it differs from the query length)."""
    return 3 * batch * heads * math.ceil(seq / block_q) * math.ceil((kv_seq or seq) / block_kv)
