"""critic/store.py and critic/scoring.py on the real tiny model with real Orbax checkpoints in tmp_path.

A frozen-trunk critic stores only its head; loading lays the stored parameters over a copy of the model
(the model passed in stays the language model); a critic of another vocabulary is refused in one line."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from midi_corpus import packaged_midi_files

from musenet_jax.config import load_config
from musenet_jax.critic.scoring import critic_logits, probability_real
from musenet_jax.critic.store import CriticMeta, critic_dir, load_critic, read_meta, save_critic
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.errors import UserError
from musenet_jax.model.transformer import build_model

CFG = load_config("tiny", ["model.d_model=32", "model.context=64", "model.dtype=float32"])
TOKENIZER = Tokenizer(CFG.encoding)
FINGERPRINT = TOKENIZER.vocab.fingerprint()


@pytest.fixture(scope="module")
def model():
    return build_model(CFG.model, TOKENIZER.vocab, seed=0)


def _params(model):
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _meta(finetune=False, fingerprint=FINGERPRINT):
    return CriticMeta(finetune, 5, 0.75, 2, 3, 3, fingerprint)


def _shifted(tree, by):
    return jax.tree.map(lambda a: a + by, tree)


def test_frozen_trunk_round_trip_stores_only_the_head(model, tmp_path):
    before = _params(model)
    head = _shifted({"critic": before["critic"]}, 1.0)
    folder = save_critic(tmp_path, head, _meta())
    assert folder == critic_dir(tmp_path) and (folder / "critic.json").is_file()
    assert read_meta(tmp_path) == _meta()
    critic, meta = load_critic(tmp_path, model, FINGERPRINT)
    assert meta == _meta()
    loaded = _params(critic)
    for a, b in zip(jax.tree.leaves(loaded["critic"]), jax.tree.leaves(head["critic"]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    trunk = {k: v for k, v in loaded.items() if k != "critic"}
    for a, b in zip(
        jax.tree.leaves(trunk), jax.tree.leaves({k: v for k, v in before.items() if k != "critic"})
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The model passed in is still the language model.
    for a, b in zip(jax.tree.leaves(_params(model)), jax.tree.leaves(before), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_finetuned_round_trip_restores_the_trunk_too(model, tmp_path):
    whole = _shifted(_params(model), 0.5)
    save_critic(tmp_path, whole, _meta(finetune=True))
    critic, meta = load_critic(tmp_path, model, FINGERPRINT)
    assert meta.finetune_trunk
    for a, b in zip(jax.tree.leaves(_params(critic)), jax.tree.leaves(whole), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_no_critic_is_none_and_wrong_fingerprint_is_one_line(model, tmp_path):
    assert read_meta(tmp_path) is None and load_critic(tmp_path, model, FINGERPRINT) is None
    save_critic(tmp_path, {"critic": _params(model)["critic"]}, _meta(fingerprint="another"))
    with pytest.raises(UserError, match="another vocabulary; retrain it") as err:
        load_critic(tmp_path, model, FINGERPRINT)
    assert "\n" not in str(err.value)


def test_critic_logits_one_per_sequence_and_batch_independent(model):
    pieces = [TOKENIZER.encode(p) for p in packaged_midi_files()[:3]]
    logits = critic_logits(model, TOKENIZER, pieces)
    assert logits.shape == (3,) and np.all(np.isfinite(logits))
    alone = critic_logits(model, TOKENIZER, pieces[1:2])
    np.testing.assert_allclose(alone, logits[1:2], rtol=1e-4, atol=1e-5)


def test_probability_real_is_the_sigmoid():
    np.testing.assert_allclose(
        probability_real(np.array([0.0, 100.0, -100.0, 2.0])),
        [0.5, 1.0, 0.0, 1 / (1 + np.exp(-2.0))],
        atol=1e-12,
    )
    assert probability_real(jnp.array([0.0])).dtype == np.float64
