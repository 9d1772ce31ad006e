"""MuseNet forward: shapes and dtypes, embeddings, mixup, critic head, and layer stacking variants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from model_inputs import VOCAB, batch, tiny_model_config

from musenet_jax.model import embeddings
from musenet_jax.model.transformer import MuseNet


def _forward(model, b, mix=None):
    return nnx.jit(lambda m, b, mix: m(b["inputs"], b["times"], b["durations"], mix=mix))(model, b, mix)


def test_bf16_forward_gives_float32_logits_with_float32_params():
    cfg = tiny_model_config(dtype="bfloat16")
    model = MuseNet(cfg, VOCAB, rngs=nnx.Rngs(0))
    b = batch(length=cfg.context)
    logits = _forward(model, b)
    assert logits.shape == (2, cfg.context, VOCAB) and logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert params and all(p.dtype == jnp.float32 for p in params)
    # Parameters are stored stacked per layer group: interleave of 2 patterns, 2 layers -> 1 group of
    # 2 blocks.
    assert model.layers.blocks[0].mlp.up.kernel.shape == (1, cfg.d_model, cfg.mlp_ratio * cfg.d_model)


def test_scan_and_remat_variants_agree_in_outputs_and_gradients():
    b = batch()
    variants = [
        dict(scan_layers=True, remat_policy="full"),
        dict(scan_layers=False, remat_policy="none"),
        dict(scan_layers=True, remat_policy="dots_saveable"),
    ]
    results = []
    for changes in variants:
        cfg = tiny_model_config(n_layers=4, attention="dense", **changes)  # 2 groups: the scan iterates
        model = MuseNet(cfg, VOCAB, rngs=nnx.Rngs(0))

        def loss(m):
            logits = m(b["inputs"], b["times"], b["durations"])
            picked = jnp.take_along_axis(logits, b["inputs"][..., None], -1)[..., 0]
            return jnp.mean(jax.nn.logsumexp(logits, -1) - picked)

        value, grads = nnx.jit(nnx.value_and_grad(loss))(model)
        results.append((value, jax.tree.leaves(grads)))
    for value, grads in results[1:]:
        np.testing.assert_allclose(value, results[0][0], rtol=1e-6)
        for g, g0 in zip(grads, results[0][1]):
            np.testing.assert_allclose(g, g0, rtol=1e-4, atol=1e-7)


def test_mixup_blends_whole_sequences():
    model = MuseNet(tiny_model_config(attention="dense"), VOCAB, rngs=nnx.Rngs(0))
    b = batch()
    swap = jnp.array([1, 0], jnp.int32)
    plain = _forward(
        model, b, (jnp.array([0, 1], jnp.int32), jnp.full(2, 0.3, jnp.float32))
    )  # identity perm: no-op
    unmixed = nnx.jit(lambda m, b: m(b["inputs"], b["times"], b["durations"]))(model, b)
    np.testing.assert_allclose(plain, unmixed, atol=1e-5)
    kept = _forward(model, b, (swap, jnp.ones(2, jnp.float32)))
    swapped = _forward(model, b, (swap, jnp.zeros(2, jnp.float32)))
    halfway = _forward(model, b, (swap, jnp.full(2, 0.5, jnp.float32)))
    np.testing.assert_allclose(kept, plain, atol=1e-5)
    np.testing.assert_allclose(swapped, plain[::-1], atol=1e-5)
    assert np.abs(halfway - plain).max() > 1e-3


def test_critic_gives_one_logit_per_sequence_pooled_over_the_mask():
    model = MuseNet(tiny_model_config(attention="dense"), VOCAB, rngs=nnx.Rngs(0))
    b = batch()
    mask = jnp.zeros((2, 64)).at[:, :32].set(1.0)
    critic = nnx.jit(lambda m, b, mask: m.critic_logits(b["inputs"], b["times"], b["durations"], mask))
    logits = critic(model, b, mask)
    assert logits.shape == (2,) and logits.dtype == jnp.float32
    # Causal trunk + masked pooling: tokens after the mask cannot move the logit, tokens inside can.
    tail_changed = dict(b, inputs=b["inputs"].at[:, 40:].set(7))
    head_changed = dict(b, inputs=b["inputs"].at[:, 5:10].set(7))
    np.testing.assert_allclose(critic(model, tail_changed, mask), logits, atol=1e-6)
    assert np.abs(critic(model, head_changed, mask) - logits).max() > 1e-6


def test_timing_embeddings_buckets():
    cfg = tiny_model_config()
    times = jnp.array([[0, 1, 11, 12, 10**6]], jnp.int32)  # 10 ms steps, 120 ms buckets
    np.testing.assert_array_equal(
        embeddings.time_buckets(times, cfg, 10), [[0, 0, 0, 1, cfg.time_buckets - 1]]
    )
    durations = jnp.array([1000], jnp.int32)
    steps = jnp.asarray(np.append(np.arange(0, 1000, 7), 1000), jnp.int32)[None]
    parts = np.asarray(embeddings.piece_parts(steps, durations, cfg))[0]
    assert parts[0] == 0 and parts[-1] == cfg.structure_parts - 1 and (np.diff(parts) >= 0).all()
    countdown = np.asarray(embeddings.countdown_buckets(steps, durations, cfg, 10))[0]
    assert (np.diff(countdown) <= 0).all() and countdown[-1] == 0 and countdown[0] > countdown[-1]
    # Log-spaced: the last second is cut finer than a second a minute before the end.
    near = embeddings.countdown_buckets(jnp.array([[900, 1000]]), jnp.array([1000]), cfg, 10)
    far = embeddings.countdown_buckets(jnp.array([[0, 100]]), jnp.array([7000]), cfg, 10)
    assert int(near[0, 0] - near[0, 1]) > int(far[0, 0] - far[0, 1])


def test_bad_shapes_are_refused_by_the_config():
    with pytest.raises(ValueError, match="n_layers"):
        tiny_model_config(n_layers=3)
    with pytest.raises(ValueError, match="d_model"):
        tiny_model_config(d_model=66)
    with pytest.raises(ValueError, match="split evenly"):
        tiny_model_config(n_heads=3, d_model=48, pattern_layout="head_split")
    with pytest.raises(ValueError, match="leaves no room"):
        tiny_model_config(context=8)
