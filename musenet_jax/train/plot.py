"""The training curve of a run as a PNG: training loss (bits per token) and validation bits per token
against the step, read from `W/metrics.jsonl`, so a run can be shown without TensorBoard."""

from __future__ import annotations

import math
import pathlib

from matplotlib.figure import Figure

from musenet_jax.errors import UserError
from musenet_jax.train.metrics import read_metrics


def plot_training_curve(
    workdir: str | pathlib.Path, out: str | pathlib.Path, *, title: str | None = None
) -> dict:
    """Writes the PNG `out`; returns the last figures plotted ({"step", "train_bits", "val_bits"})."""
    workdir = pathlib.Path(workdir)
    records = read_metrics(workdir / "metrics.jsonl")
    train = [(r["step"], r["loss"] / math.log(2)) for r in records if isinstance(r.get("loss"), (int, float))]
    val = [
        (r["step"], r["val_bits_per_token"])
        for r in records
        if isinstance(r.get("val_bits_per_token"), (int, float))
    ]
    if not train:
        raise UserError(
            f"no training losses in {workdir / 'metrics.jsonl'}; is {workdir} a `musenet-jax train` workdir?"
        )
    fig = Figure(figsize=(7, 4), dpi=120)
    ax = fig.subplots()
    ax.plot(*zip(*train), lw=1, alpha=0.8, label="train (mean over the batch)")
    if val:
        ax.plot(*zip(*val), "o-", ms=3, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per token")
    ax.set_title(title or workdir.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return {"step": train[-1][0], "train_bits": train[-1][1], "val_bits": val[-1][1] if val else None}
