"""The XLA code around the kernels ("glue") of a compiled program, read from its optimized HLO text: what
kind of work it is and how many bytes each kind moves, and which data-movement ops it holds.

Every instruction of the entry computation that is not a Mosaic kernel (a `tpu_custom_call`), a parameter,
a constant, a tuple or a bitcast is glue. Its bytes are counted as XLA's TPU cost analysis counts them: its
operands' and its output's, each at its size in HBM, where an array's two minor dimensions are padded to
whole tiles (`T(8,128)`: a [4096, 64] bf16 array holds 4096 x 128 lanes); a copy-done counts its output
only, its copy-start the source and the tuple of both buffers. So the kinds add up to the bench's
`glue_gbytes` (XLA's whole-program bytes less the kernels' declared cost) where every op reads its operands
whole (at musenet_72l's shapes to within a few hundred bytes); a gather, or a fusion that reads part of an
operand, XLA counts by rules of its own, and there the kinds are an estimate. Kinds:
  prefetch   copy-start / copy-done: XLA's memory-space assignment moving an array between memory spaces
  relayout   copy, transpose, reshape that is not a bitcast, and fusions made only of them
  gather     gather / scatter, or a fusion holding one
  compute    any other fusion or op (elementwise merges, reductions, pads, slices)
"""

from __future__ import annotations

import collections
import math
import re

_SIZES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "f64": 8}
_ARRAY = re.compile(r"\b(pred|s8|u8|bf16|f16|s32|u32|f32|s64|f64)\[([0-9,]*)\](?:\{([^}]*)\})?")
_TILE = re.compile(r"T\(([0-9,]+)\)")
# A prefetch's sync flag (a u32 scalar in memory space 2), which XLA's cost analysis counts as 4 KiB (read
# off its totals: 4,092 bytes more per copy-start than the flag's 4).
_SYNC_FLAG = re.compile(r"\bS\(2\)")
SYNC_FLAG_BYTES = 4096
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.-]+) = (.*?) ([a-z][\w-]*)\((.*)$")
_SKIP = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all", "partition-id"}
_MOVES = {"copy", "transpose", "reshape"}
DATA_MOVEMENT_OPS = ("transpose", "gather", "scatter")


def _array_bytes(dtype: str, dims: str, layout: str) -> int:
    """One array's bytes in HBM: its dimensions in layout order (major to minor), the minor ones padded to
    whole tiles of the layout's first tiling (a scalar is padded to a whole tile too)."""
    shape = [int(d) for d in dims.split(",") if d]
    order, _, tiling = (layout or "").partition(":")
    if _SYNC_FLAG.search(tiling):
        return SYNC_FLAG_BYTES
    minor_to_major = [int(d) for d in order.split(",") if d.strip()]
    physical = [shape[d] for d in reversed(minor_to_major)] if minor_to_major else shape
    tile = _TILE.search(tiling)
    if tile:
        physical = physical or [1]
        for axis, edge in zip(range(len(physical) - 1, -1, -1), reversed(tile.group(1).split(","))):
            physical[axis] = -(-physical[axis] // int(edge)) * int(edge)
    return math.prod(physical) * _SIZES[dtype]


def _bytes(shapes: str) -> int:
    return sum(_array_bytes(*array) for array in _ARRAY.findall(shapes))


def _computations(hlo: str) -> dict[str, str]:
    """Computation name -> its body text."""
    bodies, name, lines = {}, None, []
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?%([\w.-]+) ", line)
        if header and line.rstrip().endswith("{"):
            name, lines = header.group(1), []
        elif line.rstrip() == "}" and name:  # not "}}": the end of a kernel's multi-line attribute
            bodies[name] = "\n".join(lines)
            name = None
        elif name:
            lines.append(line)
    return bodies


def _entry(hlo: str) -> str:
    """The entry computation, to its closing brace (a kernel's multi-line attribute ends in "}}" lines)."""
    start = hlo.index("\nENTRY ")
    return hlo[start : (hlo + "\n").index("\n}\n", start)]


def _ops(body: str) -> set[str]:
    return {m.group(3) for m in map(_INSTRUCTION.match, body.splitlines()) if m}


def _fusion_ops(line: str, bodies: dict[str, str]) -> set[str]:
    """Ops inside a fusion (and the fusions it calls), without parameters and bitcast-like ops."""
    seen, ops, todo = set(), set(), re.findall(r"calls=%([\w.-]+)", line)
    while todo:
        name = todo.pop()
        if name in seen or name not in bodies:
            continue
        seen.add(name)
        ops |= _ops(bodies[name])
        todo += re.findall(r"calls=%([\w.-]+)", bodies[name])
    return ops - _SKIP - {"broadcast", "fusion"}


def _kind(op: str, inner: set[str]) -> str:
    if op in ("copy-start", "copy-done"):
        return "prefetch"
    if op in ("gather", "scatter") or inner & {"gather", "scatter"}:
        return "gather"
    if op in _MOVES or (op == "fusion" and inner and inner <= _MOVES):
        return "relayout"
    return "compute"


def glue_by_kind(hlo: str) -> dict[str, float]:
    """Glue bytes of a compiled program per kind (module docstring), in GB."""
    bodies, shapes, totals = _computations(hlo), {}, collections.Counter()
    for line in _entry(hlo).splitlines()[1:]:
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, out_shape, op, rest = match.groups()
        shapes[name] = out_shape
        if op in _SKIP or 'custom_call_target="tpu_custom_call"' in line:
            continue
        operands = re.findall(r"%([\w.-]+)", rest.split("),")[0])
        moved = _bytes(out_shape) + sum(_bytes(shapes.get(o, "")) for o in operands)
        if op == "copy-done":
            moved = _bytes(out_shape)  # as XLA counts it: the copy-start has read the source
        totals[_kind(op, _fusion_ops(line, bodies) if op == "fusion" else set())] += moved
    return {kind: totals[kind] / 1e9 for kind in ("prefetch", "relayout", "gather", "compute")}


def data_movement_outside_kernels(hlo: str) -> dict[str, list[str]]:
    """{op: [output shape of each instance]} for DATA_MOVEMENT_OPS anywhere in the program but inside the
    Mosaic kernels (whose bodies are not HLO), fusion bodies included."""
    found: dict[str, list[str]] = {op: [] for op in DATA_MOVEMENT_OPS}
    for line in hlo.splitlines():
        match = _INSTRUCTION.match(line)
        if match and match.group(3) in found:
            found[match.group(3)].append(match.group(2))
    return found
