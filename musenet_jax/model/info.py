"""What a model config amounts to: parameter count, FLOPs per token and attention density per layer.

Model FLOPs count what the architecture needs, not what the hardware ends up doing: the matmuls
(6 x matmul parameters per token for forward + backward, the PaLM convention) plus attention over the
key positions the sparse pattern allows; recomputation (remat) and the blocks wasted by the block-sparse
layout are not useful work and do not count. They are the numerator of MFU.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax

from musenet_jax.attention.layouts import make_layout
from musenet_jax.attention.patterns import layer_patterns
from musenet_jax.encoding.vocab import Vocabulary
from musenet_jax.model.config import ModelConfig
from musenet_jax.model.transformer import abstract_params


@dataclasses.dataclass(frozen=True)
class LayerAttention:
    """Attention of one layer: its head-group patterns, the fraction of n x n pairs they allow, and the
    fraction the block-sparse layout computes (whole blocks); both averaged over head groups."""

    layer: int
    patterns: tuple[str, ...]
    pattern_density: float
    layout_density: float


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    vocab_size: int
    parameters: int
    train_flops_per_token: float  # forward + backward model FLOPs (`flops_per_token`)
    layers: tuple[LayerAttention, ...]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def count_parameters(model: ModelConfig, vocab: Vocabulary) -> int:
    """Exact parameter count of the run's model, from abstract shapes (nothing allocated)."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_params(model, vocab)[1]))


def layer_attention(cfg: ModelConfig) -> tuple[LayerAttention, ...]:
    """Per-layer densities at the config's context and block size (layouts are cached per pattern)."""
    rows = []
    for layer in range(cfg.n_layers):
        groups = layer_patterns(
            cfg.patterns, cfg.pattern_layout, layer, stride=cfg.stride, summary=cfg.fixed_summary
        )
        layouts = [make_layout(p, cfg.context, cfg.block_size) for p in groups]
        rows.append(
            LayerAttention(
                layer,
                tuple(p.name for p in groups),
                sum(lay.pattern_density for lay in layouts) / len(layouts),
                sum(lay.density for lay in layouts) / len(layouts),
            )
        )
    return tuple(rows)


def flops_per_token(cfg: ModelConfig, vocab_size: int) -> float:
    """Training (forward + backward) model FLOPs per token of a `context`-long sequence."""
    d = cfg.d_model
    per_layer_matmul_params = 4 * d * d + 2 * cfg.mlp_ratio * d * d  # q, k, v, out + the MLP
    matmul_params = cfg.n_layers * per_layer_matmul_params + d * vocab_size  # + the output projection
    # Mean keys a query attends to (pattern_density x n), over layers and head groups.
    keys_per_query = sum(row.pattern_density for row in layer_attention(cfg)) / cfg.n_layers * cfg.context
    # Q.K^T and P.V: 2 matmuls x 2 FLOPs x d per allowed pair, forward; backward doubles it twice over.
    return 6.0 * matmul_params + 12 * d * cfg.n_layers * keys_per_query


def model_info(model: ModelConfig, vocab: Vocabulary) -> ModelInfo:
    return ModelInfo(
        vocab.size,
        count_parameters(model, vocab),
        flops_per_token(model, vocab.size),
        layer_attention(model),
    )
