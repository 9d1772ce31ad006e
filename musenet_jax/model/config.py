"""Model settings (what the parameters mean, and how they are computed) and the device mesh."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The MuseNet decoder. `vocab_size` is not here: the encoding config fixes it."""

    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    mlp_ratio: int = 4
    context: int = 256  # tokens per training sequence
    # Where a token sits in the window: a learned absolute table added to the input (MuseNet), or rotary
    # embeddings of queries and keys (model/rotary.py), which make attention scores depend on distance only.
    position_encoding: Literal["learned", "rotary"] = "learned"
    attention: Literal["dense", "xla_blocksparse", "pallas"] = "xla_blocksparse"
    patterns: tuple[str, ...] = ("strided", "fixed")  # sparse patterns used by the layers
    pattern_layout: Literal["interleave", "merge", "head_split"] = "interleave"
    stride: int = 16  # l of strided(l) and fixed(l, c)
    fixed_summary: int = 4  # c of fixed(l, c)
    block_size: int = 16  # block edge of the block-sparse layouts
    # The Pallas TPU backward: a dq and a dk/dv kernel, or one fused kernel (pallas_kernels/flash_tpu.py).
    pallas_backward: Literal["split", "fused"] = "split"
    time_buckets: int = 2048  # timing embedding: absolute time in units of time_bucket_ms, clipped
    time_bucket_ms: int = 120
    structure_parts: int = 128  # piece-position embedding: the piece cut into this many parts
    countdown_buckets: int = 128  # countdown-to-end embedding buckets
    dtype: Literal["bfloat16", "float32"] = "bfloat16"  # compute dtype; parameters stay float32
    param_dtype: Literal["float32"] = "float32"
    remat_policy: Literal["none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable"] = "full"
    scan_layers: bool = True
    # An input embedding of the notes sounding at each position (model/sounding.py): beyond MuseNet.
    sounding_embedding: bool = False
    # No probability on a silent note's note-off, in training, evaluation and sampling (model/sounding.py).
    note_off_mask: bool = False

    # Keys that choose how the same parameters are computed; a run may resume with them changed.
    EXECUTION_KEYS: ClassVar[tuple[str, ...]] = (
        "attention",
        "block_size",
        "pallas_backward",
        "dtype",
        "remat_policy",
        "scan_layers",
    )
    # The conditioning prefix alone takes up to 12 tokens (composer, 10 instruments, start); a context
    # must leave room to continue it.
    MIN_CONTEXT: ClassVar[int] = 32

    def __post_init__(self) -> None:
        """Every value against its meaning, so a bad one is one line before any work starts."""
        for key in (
            "d_model",
            "n_layers",
            "n_heads",
            "mlp_ratio",
            "stride",
            "fixed_summary",
            "block_size",
            "time_buckets",
            "time_bucket_ms",
            "structure_parts",
            "countdown_buckets",
        ):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key} must be a positive integer, got {getattr(self, key)}")
        if self.context < self.MIN_CONTEXT:
            raise ValueError(
                f"model.context={self.context} leaves no room to compose after the conditioning "
                f"prefix; use at least {self.MIN_CONTEXT}"
            )
        if self.position_encoding not in ("learned", "rotary"):
            raise ValueError(
                f"model.position_encoding must be learned or rotary, not {self.position_encoding!r}"
            )
        if self.position_encoding == "rotary" and (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"model.position_encoding=rotary rotates pairs of dimensions: the head size "
                f"d_model / n_heads = {self.d_model // self.n_heads} must be even"
            )
        if not self.patterns:
            raise ValueError("model.patterns needs at least one of strided, fixed")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"model.d_model={self.d_model} must be divisible by model.n_heads={self.n_heads}"
            )
        cycle = len(self.patterns) if self.pattern_layout == "interleave" else 1
        if self.n_layers % cycle:
            raise ValueError(
                f"model.n_layers={self.n_layers} must be a multiple of the {cycle} interleaved "
                f"patterns {', '.join(self.patterns)}"
            )
        head_groups = len(self.patterns) if self.pattern_layout == "head_split" else 1
        if self.n_heads % head_groups:
            raise ValueError(
                f"model.n_heads={self.n_heads} cannot be split evenly over the patterns "
                f"{', '.join(self.patterns)}"
            )
        if self.fixed_summary > self.stride:
            raise ValueError(
                f"model.fixed_summary={self.fixed_summary} must not exceed model.stride={self.stride}"
            )

    def free_keys(self, other: ModelConfig) -> tuple[str, ...]:
        """Keys that may differ between two models sharing parameters: the EXECUTION_KEYS, and with rotary
        positions on both sides the context (no parameter has its size), so a run can grow its window."""
        rotary = self.position_encoding == other.position_encoding == "rotary"
        return self.EXECUTION_KEYS + (("context",) if rotary else ())

    def architecture_changes(self, other: ModelConfig) -> list[str]:
        """`model.KEY a -> b` for every key that differs in `other` and changes what the parameters mean
        (every key but the `free_keys`): parameters of one cannot serve the other."""
        mine, theirs = dataclasses.asdict(self), dataclasses.asdict(other)
        free = self.free_keys(other)
        return [
            f"model.{key} {mine[key]!r} -> {theirs[key]!r}"
            for key in sorted(mine)
            if key not in free and mine[key] != theirs[key]
        ]


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Devices per mesh axis; one may be -1 = whatever is left. Not part of what a checkpoint means:
    a run saved on one slice resumes on another (Orbax reshards on restore)."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    def __post_init__(self) -> None:
        sizes = {"data": self.data, "fsdp": self.fsdp, "tensor": self.tensor}
        if any(size == 0 or size < -1 for size in sizes.values()) or list(sizes.values()).count(-1) > 1:
            shown = ", ".join(f"mesh.{k}={v}" for k, v in sizes.items())
            raise ValueError(f"{shown}: each must be >= 1, and at most one may be -1 (the devices left)")
