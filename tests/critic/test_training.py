"""critic/training.py on the real tiny model: real pieces (packaged MIDI) vs synthetic ones.

train_critic promises: only the critic subtree comes back when the trunk is frozen, the whole tree when it
is fine-tuned, the model passed in is untouched, and the held-out AUC is a fraction in [0, 1]."""

import jax
import numpy as np
import pytest
from flax import nnx
from midi_corpus import packaged_midi_files

from musenet_jax.config import load_config
from musenet_jax.critic.training import split_heldout, train_critic
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.errors import UserError
from musenet_jax.model.transformer import build_model

OVERRIDES = [
    "model.d_model=32",
    "model.context=64",
    "model.dtype=float32",
    "critic.steps=2",
    "critic.batch=4",
    "critic.heldout=0.34",
]


@pytest.fixture(scope="module")
def pieces():
    tokenizer = Tokenizer(load_config("tiny").encoding)
    reals = [tokenizer.encode(p) for p in packaged_midi_files()[:6]]
    rng = np.random.default_rng(0)
    # Synthetic fakes: each real piece's prefix followed by its own tokens shuffled.
    fakes = []
    for ids in reals:
        head = tokenizer.prefix_length(ids)
        fakes.append(np.concatenate([ids[:head], rng.permutation(ids[head:])]).astype(np.int32))
    return tokenizer, reals, fakes


@pytest.mark.slow
@pytest.mark.parametrize("finetune", [False, True])
def test_train_critic_returns_the_trainable_subtree_and_leaves_the_model(pieces, finetune):
    tokenizer, reals, fakes = pieces
    cfg = load_config("tiny", [*OVERRIDES, f"critic.finetune_trunk={finetune}"])
    model = build_model(cfg.model, tokenizer.vocab, seed=0)
    before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    params, auc, loss, held_real, held_fake = train_critic(
        cfg.critic, cfg.data, cfg.model.context, model, tokenizer, reals, fakes, show_progress=False
    )
    if finetune:
        assert set(params) == set(before) and len(params) > 1
    else:
        assert set(params) == {"critic"}
    assert not np.array_equal(
        np.asarray(jax.tree.leaves(params["critic"])[0]), jax.tree.leaves(before["critic"])[0]
    )  # the head learned something
    after = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    assert 0.0 <= auc <= 1.0 and np.isfinite(loss)
    assert held_real == 2 and held_fake == 2


def test_split_heldout_keeps_at_least_one_of_each():
    rng = np.random.default_rng(0)
    for count, fraction in [(2, 0.01), (2, 0.99), (10, 0.25), (3, 0.5)]:
        train, held = split_heldout(count, fraction, rng)
        assert len(train) >= 1 and len(held) >= 1
        assert sorted([*train, *held]) == list(range(count))
    assert len(split_heldout(10, 0.25, rng)[1]) == 2
    with pytest.raises(UserError, match="at least 2 pieces"):
        split_heldout(1, 0.5, rng)
