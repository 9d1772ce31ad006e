"""What a model config amounts to: parameter count, FLOPs per token and attention density per layer."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from musenet_jax.model.config import ModelConfig


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
    train_flops_per_token: float  # forward + backward model FLOPs (train/flops.py)
    layers: tuple[LayerAttention, ...]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def count_parameters(cfg: ModelConfig, vocab_size: int) -> int:
    """Exact parameter count of `MuseNet(cfg, vocab_size)`, from abstract shapes (nothing allocated)."""
    import jax
    from flax import nnx

    from musenet_jax.model.transformer import MuseNet

    abstract = nnx.eval_shape(lambda: MuseNet(cfg, vocab_size, rngs=nnx.Rngs(0)))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


def layer_attention(cfg: ModelConfig) -> tuple[LayerAttention, ...]:
    """Per-layer densities at the config's context and block size (layouts are cached per pattern)."""
    from musenet_jax.attention.layouts import make_layout
    from musenet_jax.attention.patterns import layer_patterns

    rows = []
    for layer in range(cfg.n_layers):
        groups = layer_patterns(cfg.patterns, cfg.pattern_layout, layer, stride=cfg.stride, summary=cfg.fixed_summary)
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


def model_info(cfg: ModelConfig, vocab_size: int) -> ModelInfo:
    from musenet_jax.model.transformer import check_model_config
    from musenet_jax.train.flops import flops_per_token

    check_model_config(cfg)
    return ModelInfo(
        vocab_size, count_parameters(cfg, vocab_size), flops_per_token(cfg, vocab_size), layer_attention(cfg)
    )
