"""The inner critic's workflows on a loaded run: train it on real vs generated pieces, score MIDI files."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

from musenet_jax.app.run import Run
from musenet_jax.critic.fakes import load_fakes
from musenet_jax.critic.store import CriticMeta, save_critic
from musenet_jax.critic.training import train_critic
from musenet_jax.data.pieces import load_split_pieces
from musenet_jax.encoding.midi_io import MidiReadError
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
        line = (
            f"trained the {what} for {self.steps} steps (loss {self.final_loss:.4f}); held-out ROC AUC "
            f"{self.heldout_auc:.3f} on {self.heldout_real} real vs {self.heldout_fake} generated pieces; "
            f"saved to {self.saved_to}"
        )
        if min(self.heldout_real, self.heldout_fake) < 8:
            line += (
                "\nwarning: so few held-out pieces make the AUC a rough guess; make more fakes "
                "(--set critic.fakes=N) or hold out more (--set critic.heldout=F)"
            )
        return line


def train_critic_for_run(
    run: Run, fakes_dir: str | os.PathLike, *, split: str = "train", seed: int = 0, show_progress: bool = True
) -> CriticReport:
    """Trains the run's critic on real pieces of `split` vs the fakes; stores it in the run's work dir."""
    if run.kind != "run":
        raise UserError(
            f"{run.source or run.workdir} is an exported bundle, and a critic is trained into a training "
            "run's folder; train it on the run the bundle came from, or on one fine-tuned from the "
            "bundle, then export again"
        )
    cfg, tokenizer = run.cfg, run.tokenizer
    reals = load_split_pieces(cfg.data, cfg.encoding, split)
    fakes = load_fakes(fakes_dir, tokenizer)
    params, auc, loss, held_real, held_fake = train_critic(
        cfg.critic,
        cfg.data,
        cfg.model.context,
        run.model,
        tokenizer,
        reals,
        fakes,
        seed=seed,
        show_progress=show_progress,
    )
    cc = cfg.critic
    meta = CriticMeta(
        cc.finetune_trunk, cc.steps, auc, held_real, held_fake, run.step, tokenizer.vocab.fingerprint()
    )
    folder = save_critic(run.workdir, params, meta)
    return CriticReport(auc, loss, cc.steps, held_real, held_fake, cc.finetune_trunk, str(folder))


def score_files(
    run: Run, files: Sequence[str], *, composer: str | None = None, say: Callable[[str], None] = print
) -> list[tuple[str, float]]:
    """(file, probability that it is real music) for each readable file; unreadable ones are said and
    skipped."""
    critic = run.trained_critic()
    readable, pieces = [], []
    for path in files:
        try:
            pieces.append(run.tokenizer.encode(path, composer=composer))
            readable.append(path)
        except MidiReadError as err:
            say(f"skipped {path}: {err}")
    if not pieces:
        raise UserError("none of the files could be read as MIDI")
    scores = critic.score(pieces)
    return list(zip(readable, (float(s) for s in scores)))
