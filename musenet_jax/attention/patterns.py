"""Sparse Transformer attention patterns as predicates over (query i, key j): the one source of truth.

A pattern says which keys a query may see, causality included. Everything else is derived from
`allowed`: the dense boolean mask of the reference (`Pattern.mask`), and the block tables of
`musenet_jax.attention.layouts`. `allowed` uses only integer operators, so it works elementwise on numpy
arrays and on traced `jax.numpy` arrays alike (the dense backend builds its mask inside `jit`).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import numpy as np

from musenet_jax.errors import UserError, unknown_choice

PATTERN_NAMES: tuple[str, ...] = ("strided", "fixed")


class Pattern(abc.ABC):
    """Causal sparse attention pattern; immutable and hashable so layouts can be cached per pattern."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Readable name with parameters, e.g. `strided(128)`."""

    @abc.abstractmethod
    def allowed(self, i: Any, j: Any) -> Any:
        """Whether query `i` may attend to key `j`; elementwise over broadcastable integer arrays."""

    def mask(self, seq_len: int) -> np.ndarray:
        """Dense [seq_len, seq_len] boolean mask (row = query). O(n^2) memory: for references and tests."""
        pos = np.arange(seq_len, dtype=np.int64)
        return np.asarray(self.allowed(pos[:, None], pos[None, :]), dtype=bool)


@dataclasses.dataclass(frozen=True)
class Strided(Pattern):
    """strided(l): the last l positions (local band) plus every l-th position before them."""

    stride: int

    @property
    def name(self) -> str:
        return f"strided({self.stride})"

    def allowed(self, i: Any, j: Any) -> Any:
        d = i - j
        return (d >= 0) & ((d < self.stride) | (d % self.stride == 0))


@dataclasses.dataclass(frozen=True)
class Fixed(Pattern):
    """fixed(l, c): the query's own l-block plus the last c "summary" positions of every block."""

    stride: int
    summary: int

    @property
    def name(self) -> str:
        return f"fixed({self.stride},{self.summary})"

    def allowed(self, i: Any, j: Any) -> Any:
        l, c = self.stride, self.summary
        return (j <= i) & ((i // l == j // l) | (j % l >= l - c))


@dataclasses.dataclass(frozen=True)
class Union(Pattern):
    """Keys allowed by any of `parts` (the "merged" pattern of the Sparse Transformer)."""

    parts: tuple[Pattern, ...]

    @property
    def name(self) -> str:
        return "+".join(p.name for p in self.parts)

    def allowed(self, i: Any, j: Any) -> Any:
        result = self.parts[0].allowed(i, j)
        for part in self.parts[1:]:
            result = result | part.allowed(i, j)
        return result


def strided(stride: int) -> Strided:
    if stride < 1:
        raise UserError(f"strided pattern needs stride >= 1, got {stride}")
    return Strided(int(stride))


def fixed(stride: int, summary: int) -> Fixed:
    if stride < 1 or not 1 <= summary <= stride:
        raise UserError(
            f"fixed pattern needs stride >= 1 and 1 <= summary <= stride, got ({stride}, {summary})"
        )
    return Fixed(int(stride), int(summary))


def union(*patterns: Pattern) -> Pattern:
    """Merge patterns; nested unions are flattened and duplicates dropped (order kept)."""
    flat: list[Pattern] = []
    for pattern in patterns:
        for part in pattern.parts if isinstance(pattern, Union) else (pattern,):
            if part not in flat:
                flat.append(part)
    if not flat:
        raise UserError("union of no patterns")
    return flat[0] if len(flat) == 1 else Union(tuple(flat))


def by_name(name: str, *, stride: int, summary: int) -> Pattern:
    """The pattern a config names (`model.patterns`), built from `model.stride` / `model.fixed_summary`."""
    if name == "strided":
        return strided(stride)
    if name == "fixed":
        return fixed(stride, summary)
    raise unknown_choice("attention pattern", name, PATTERN_NAMES)


ARRANGEMENTS: tuple[str, ...] = ("interleave", "merge", "head_split")


def layer_patterns(
    names: tuple[str, ...], arrangement: str, layer: int, *, stride: int, summary: int
) -> tuple[Pattern, ...]:
    """The per-head-group patterns of one layer (the `attend` argument), for the three ways the Sparse
    Transformer combines patterns: `interleave` cycles them over layers, `merge` unions them in every
    layer, `head_split` gives each its own group of heads in every layer."""
    patterns = tuple(by_name(n, stride=stride, summary=summary) for n in names)
    if not patterns:
        raise UserError("at least one attention pattern is needed")
    if arrangement == "interleave":
        return (patterns[layer % len(patterns)],)
    if arrangement == "merge":
        return (union(*patterns),)
    if arrangement == "head_split":
        return patterns
    raise unknown_choice("pattern arrangement", arrangement, ARRANGEMENTS)
