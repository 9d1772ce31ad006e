"""`critic train`: teach the critic head (and, if configured, the trunk) to tell real pieces from the
model's own samples, report ROC AUC on pieces held out of both, and store the critic in the work dir.

Training rows are random crops of the context length with the prefix at the head (as in language-model
training), half real, half generated, labelled 1 and 0. The held-out verdict is per piece: the mean
critic logit over all of a piece's windows (`scoring.critic_logits`), as when ranking candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from musenet_jax.critic.auc import roc_auc
from musenet_jax.critic.config import CriticConfig
from musenet_jax.critic.scoring import critic_logits
from musenet_jax.data.config import DataConfig
from musenet_jax.data.pipeline import CropExample
from musenet_jax.errors import UserError


def split_heldout(count: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices): at least one of each."""
    if count < 2:
        raise UserError(f"need at least 2 pieces of each kind to hold some out, got {count}")
    held = min(max(1, round(count * fraction)), count - 1)
    order = rng.permutation(count)
    return np.sort(order[held:]), np.sort(order[:held])


def training_rows(
    crop: Any, pieces: Sequence[np.ndarray], picks: np.ndarray, rng: np.random.Generator, pad_id: int
) -> dict[str, np.ndarray]:
    """Random crops of the picked pieces, stacked; `valid` marks the positions holding tokens."""
    rows = [crop({"ids": pieces[i]}, rng) for i in picks]
    batch = {k: np.stack([r[k] for r in rows]) for k in ("inputs", "times", "durations")}
    batch["valid"] = (batch["inputs"] != pad_id).astype(np.float32)
    return batch


def train_critic(
    cc: CriticConfig,
    data: DataConfig,
    context: int,
    model: Any,
    tokenizer: Any,
    reals: Sequence[np.ndarray],
    fakes: Sequence[np.ndarray],
    *,
    seed: int = 0,
    show_progress: bool = True,
) -> tuple[dict[str, Any], float, float, int, int]:
    """Trains on real (1) vs generated (0); returns (trained params subtree, held-out AUC, last loss,
    held-out real count, held-out fake count). Rows are random crops of `context` tokens of the pieces,
    read as `data` says (its augmentation ranges, none applied). `model` is left untouched."""
    rng = np.random.default_rng(seed)
    real_train, real_held = split_heldout(len(reals), cc.heldout, rng)
    fake_train, fake_held = split_heldout(len(fakes), cc.heldout, rng)

    graphdef, state = nnx.split(model)
    # plain single-device arrays: the step's outputs then match its inputs and it compiles once
    params = jax.device_put(nnx.to_pure_dict(state), jax.local_devices()[0])
    if cc.finetune_trunk:
        trainable, frozen = params, {}
    else:
        trainable, frozen = {"critic": params["critic"]}, {k: v for k, v in params.items() if k != "critic"}
    tx = optax.adam(cc.learning_rate)
    opt_state = tx.init(trainable)

    @jax.jit
    def step(trainable, opt_state, frozen, rows, labels):
        def loss_fn(tr):
            critic = nnx.merge(graphdef, {**frozen, **tr})
            logits = critic.critic_logits(rows["inputs"], rows["times"], rows["durations"], rows["valid"])
            return optax.sigmoid_binary_cross_entropy(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(trainable)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, loss

    crop = CropExample(tokenizer, data, context, augment=False)
    half = cc.batch // 2
    labels = jnp.concatenate([jnp.ones(half), jnp.zeros(half)])
    loss = float("nan")
    with tqdm(range(cc.steps), desc="critic", unit="step", disable=not show_progress) as bar:
        for _ in bar:
            real_rows = training_rows(crop, reals, rng.choice(real_train, half), rng, tokenizer.vocab.pad_id)
            fake_rows = training_rows(crop, fakes, rng.choice(fake_train, half), rng, tokenizer.vocab.pad_id)
            rows = {k: jnp.asarray(np.concatenate([real_rows[k], fake_rows[k]])) for k in real_rows}
            trainable, opt_state, loss_value = step(trainable, opt_state, frozen, rows, labels)
            loss = float(loss_value)
            bar.set_postfix(loss=f"{loss:.4f}")

    critic = nnx.merge(graphdef, {**frozen, **trainable})
    held = [reals[i] for i in real_held] + [fakes[i] for i in fake_held]
    logits = critic_logits(critic, tokenizer, held)
    truth = np.concatenate([np.ones(len(real_held)), np.zeros(len(fake_held))])
    return trainable, roc_auc(logits, truth), loss, len(real_held), len(fake_held)
