"""`musenet-jax model-info`: parameter count matches the architecture, densities come from the layouts."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from musenet_jax.attention.patterns import layer_patterns
from musenet_jax.cli.main import main
from musenet_jax.config import load_config
from musenet_jax.encoding.vocab import Vocabulary
from musenet_jax.model.info import flops_per_token, layer_attention
from musenet_jax.model.transformer import MuseNet


def test_model_info_json_for_tiny(capsys):
    assert main(["model-info", "--config", "tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    cfg = load_config("tiny").model
    vocab = Vocabulary(load_config("tiny").encoding).size
    d = cfg.d_model
    embeddings = (vocab + cfg.context + cfg.time_buckets + cfg.structure_parts + cfg.countdown_buckets) * d
    per_layer = 4 * (d * d + d) + 2 * 2 * d + 2 * cfg.mlp_ratio * d * d + cfg.mlp_ratio * d + d
    expected = embeddings + cfg.n_layers * per_layer + 2 * d + (d * vocab + vocab) + (d + 1)
    assert info["vocab_size"] == vocab and info["parameters"] == expected
    real = MuseNet(cfg, vocab, rngs=nnx.Rngs(0))
    assert sum(x.size for x in jax.tree.leaves(nnx.state(real, nnx.Param))) == expected
    assert info["train_flops_per_token"] == flops_per_token(cfg, vocab)
    layers = info["layers"]
    assert [row["patterns"] for row in layers] == [["strided(16)"], ["fixed(16,4)"]]
    for row in layers:
        assert 0 < row["pattern_density"] <= row["layout_density"] < 1


def test_model_info_bad_config_is_a_user_error(capsys):
    assert main(["model-info", "--config", "tiny", "--set", "model.n_layers=3"]) == 2
    err = capsys.readouterr().err
    assert "n_layers" in err and "Traceback" not in err


def test_model_flops_count_the_pairs_the_attention_pattern_allows():
    cfg = load_config("tiny").model
    n = cfg.context
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    per_layer = []
    for layer in range(cfg.n_layers):
        groups = layer_patterns(
            cfg.patterns, cfg.pattern_layout, layer, stride=cfg.stride, summary=cfg.fixed_summary
        )
        per_layer.append(np.mean([np.asarray(p.allowed(i, j)).sum() / n for p in groups]))
    pairs = float(np.mean(per_layer))
    assert np.mean([row.pattern_density * n for row in layer_attention(cfg)]) == pytest.approx(pairs)
    assert 1 < pairs < (n + 1) / 2  # sparser than causal attention
    d, layers = cfg.d_model, cfg.n_layers
    matmul_params = layers * (4 + 2 * cfg.mlp_ratio) * d * d + d * 100
    assert flops_per_token(cfg, 100) == pytest.approx(6 * matmul_params + 12 * d * layers * pairs)
