"""Model settings: size, attention pattern and backend, precision, rematerialization, mesh."""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The MuseNet decoder. `vocab_size` is not here: the encoding config fixes it."""

    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    mlp_ratio: int = 4
    context: int = 256  # tokens per training sequence
    attention: Literal["dense", "xla_blocksparse", "pallas"] = "xla_blocksparse"
    patterns: tuple[str, ...] = ("strided", "fixed")  # sparse patterns used by the layers
    pattern_layout: Literal["interleave", "merge", "head_split"] = "interleave"
    stride: int = 16  # l of strided(l) and fixed(l, c)
    fixed_summary: int = 4  # c of fixed(l, c)
    block_size: int = 16  # block edge of the block-sparse layouts
    time_buckets: int = 2048  # timing embedding: absolute time in units of time_bucket_ms, clipped
    time_bucket_ms: int = 120
    structure_parts: int = 128  # piece-position embedding: the piece cut into this many parts
    countdown_buckets: int = 128  # countdown-to-end embedding buckets
    dtype: Literal["bfloat16", "float32"] = "bfloat16"  # compute dtype; parameters stay float32
    param_dtype: Literal["float32"] = "float32"
    remat_policy: Literal["none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable"] = "full"
    scan_layers: bool = True
    mesh_data: int = -1  # devices on the data axis; -1 = whatever is left
    mesh_fsdp: int = 1
    mesh_tensor: int = 1
