"""KV-cache sampling: prefill + one-token decode steps give the full forward's logits."""

import numpy as np
import pytest
from flax import nnx
from model_inputs import VOCAB, batch, tiny_model_config

from musenet_jax.errors import UserError
from musenet_jax.model.transformer import MuseNet


@pytest.mark.parametrize(
    "attention,layout,positions",
    [
        ("xla_blocksparse", "interleave", "learned"),
        ("dense", "head_split", "learned"),
        ("xla_blocksparse", "interleave", "rotary"),
    ],
    ids=["blocksparse-interleave", "dense-head_split", "blocksparse-rotary"],
)
def test_prefill_and_decode_match_full_forward(attention, layout, positions):
    cfg = tiny_model_config(
        attention=attention,
        pattern_layout=layout,
        n_layers=4,
        stride=8,
        fixed_summary=2,
        position_encoding=positions,
    )
    model = MuseNet(cfg, VOCAB, rngs=nnx.Rngs(1))
    b = batch(length=50, seed=3)
    full = nnx.jit(lambda m, b: m(b["inputs"], b["times"], b["durations"]))(model, b)

    prompt = 21  # not a multiple of the block or the stride
    cache = model.init_cache(2, 56)
    prefill = nnx.jit(
        lambda m, b, c: m.prefill(b["inputs"][:, :prompt], b["times"][:, :prompt], b["durations"], c)
    )
    logits, cache = prefill(model, b, cache)
    np.testing.assert_allclose(logits, full[:, :prompt], atol=2e-5)
    assert int(cache.length) == prompt

    step = nnx.jit(lambda m, tok, t, d, c: m.decode_step(tok, t, d, c))
    for pos in range(prompt, 50):
        logits, cache = step(model, b["inputs"][:, pos], b["times"][:, pos], b["durations"], cache)
        np.testing.assert_allclose(logits, full[:, pos], atol=2e-5, err_msg=f"position {pos}")
    assert int(cache.length) == 50


def test_cache_limits_are_user_errors():
    model = MuseNet(tiny_model_config(), VOCAB, rngs=nnx.Rngs(0))
    with pytest.raises(UserError, match="cache length"):
        model.init_cache(1, 65)
    b = batch(length=20)
    with pytest.raises(UserError, match="does not fit"):
        model.prefill(b["inputs"], b["times"], b["durations"], model.init_cache(2, 10))
