"""`critic train`: teach the critic head (and, if configured, the trunk) to tell real pieces from the
model's own samples, report ROC AUC on pieces held out of both, and store the critic in the work dir.

Training rows are random crops of the context length with the prefix at the head (as in language-model
training), half real, half generated, labelled 1 and 0. The held-out verdict is per piece: the mean
critic logit over all of a piece's windows (`scoring.critic_logits`), as when ranking candidates.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from musenet_jax.config import Config
from musenet_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class CriticReport:
    heldout_auc: float
    final_loss: float
    steps: int
    heldout_real: int
    heldout_fake: int
    finetune_trunk: bool
    saved_to: str

    def describe(self) -> str:
        what = "critic head and trunk" if self.finetune_trunk else "critic head (trunk frozen)"
        return (f"trained the {what} for {self.steps} steps (loss {self.final_loss:.4f}); held-out ROC AUC "
                f"{self.heldout_auc:.3f} on {self.heldout_real} real vs {self.heldout_fake} generated pieces; "
                f"saved to {self.saved_to}")


def split_heldout(count: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices): at least one of each."""
    if count < 2:
        raise UserError(f"need at least 2 pieces of each kind to hold some out, got {count}")
    held = min(max(1, round(count * fraction)), count - 1)
    order = rng.permutation(count)
    return np.sort(order[held:]), np.sort(order[:held])


def training_rows(crop: Any, pieces: Sequence[np.ndarray], picks: np.ndarray, rng: np.random.Generator, pad_id: int) -> dict[str, np.ndarray]:
    """Random crops of the picked pieces, stacked; `valid` marks the positions holding tokens."""
    rows = [crop({"ids": pieces[i]}, rng) for i in picks]
    batch = {k: np.stack([r[k] for r in rows]) for k in ("inputs", "times", "durations")}
    batch["valid"] = (batch["inputs"] != pad_id).astype(np.float32)
    return batch


def train_critic(
    cfg: Config,
    model: Any,
    tokenizer: Any,
    reals: Sequence[np.ndarray],
    fakes: Sequence[np.ndarray],
    *,
    seed: int = 0,
    show_progress: bool = True,
) -> tuple[dict[str, Any], float, float, int, int]:
    """Trains on real (1) vs generated (0); returns (trained params subtree, held-out AUC, last loss,
    held-out real count, held-out fake count). `model` is left untouched."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx
    from tqdm import tqdm

    from musenet_jax.critic.auc import roc_auc
    from musenet_jax.critic.scoring import critic_logits
    from musenet_jax.data.pipeline import CropExample

    sc = cfg.sample
    if sc.critic_batch < 2 or sc.critic_batch % 2:
        raise UserError(f"sample.critic_batch must be an even number >= 2, got {sc.critic_batch}")
    if sc.critic_steps < 1:
        raise UserError(f"sample.critic_steps must be at least 1, got {sc.critic_steps}")
    rng = np.random.default_rng(seed)
    real_train, real_held = split_heldout(len(reals), sc.critic_heldout, rng)
    fake_train, fake_held = split_heldout(len(fakes), sc.critic_heldout, rng)

    graphdef, state = nnx.split(model)
    # plain single-device arrays: the step's outputs then match its inputs and it compiles once
    params = jax.device_put(nnx.to_pure_dict(state), jax.local_devices()[0])
    if sc.critic_finetune_trunk:
        trainable, frozen = params, {}
    else:
        trainable, frozen = {"critic": params["critic"]}, {k: v for k, v in params.items() if k != "critic"}
    tx = optax.adam(sc.critic_learning_rate)
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

    crop = CropExample(tokenizer, cfg.data, cfg.model.context, augment=False)
    half = sc.critic_batch // 2
    labels = jnp.concatenate([jnp.ones(half), jnp.zeros(half)])
    loss = float("nan")
    with tqdm(range(sc.critic_steps), desc="critic", unit="step", disable=not show_progress) as bar:
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


def train_critic_in_workdir(
    workdir: str | os.PathLike,
    fakes_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    split: str = "train",
    overrides: Sequence[str] = (),
    seed: int = 0,
    show_progress: bool = True,
) -> CriticReport:
    """Loads the run's latest checkpoint, real pieces of `split` and the fakes; trains; stores the critic."""
    from musenet_jax.critic.fakes import load_fakes
    from musenet_jax.critic.store import CriticMeta, save_critic
    from musenet_jax.eval.pieces import load_split_pieces
    from musenet_jax.sample.compose import with_sample_overrides
    from musenet_jax.train.checkpoint import RunCheckpoints, restore_for_inference

    cfg, model, tokenizer = restore_for_inference(workdir)
    cfg = with_sample_overrides(cfg, overrides)
    reals = load_split_pieces(cfg, data_dir, split)
    fakes = load_fakes(fakes_dir, tokenizer)
    params, auc, loss, held_real, held_fake = train_critic(cfg, model, tokenizer, reals, fakes, seed=seed,
                                                           show_progress=show_progress)
    checkpoints = RunCheckpoints(workdir, read_only=True)
    try:
        base_step = int(checkpoints.latest_step())
    finally:
        checkpoints.close()
    meta = CriticMeta(cfg.sample.critic_finetune_trunk, cfg.sample.critic_steps, auc, held_real, held_fake,
                      base_step, tokenizer.vocab.fingerprint())
    folder = save_critic(workdir, params, meta)
    return CriticReport(auc, loss, cfg.sample.critic_steps, held_real, held_fake, cfg.sample.critic_finetune_trunk,
                        str(folder))
