"""The training curve of a run as a PNG: training loss (bits per token) and validation bits per token
against the step, read from `W/metrics.jsonl`, so a run can be shown without TensorBoard."""

from __future__ import annotations

import math
import pathlib

from etils import epath
from matplotlib.figure import Figure

from musenet_jax.errors import UserError
from musenet_jax.storage import save_figure
from musenet_jax.train.metrics import read_metrics


def plot_training_curve(
    workdir: str | pathlib.Path, out: str | pathlib.Path, *, title: str | None = None
) -> dict:
    """Writes the PNG `out`; returns the last figures plotted ({"step", "train_bits", "val_bits"})."""
    workdir = epath.Path(workdir)
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
    save_figure(fig, out)
    return {"step": train[-1][0], "train_bits": train[-1][1], "val_bits": val[-1][1] if val else None}


def plot_validation_against_time(
    workdirs: list[str | pathlib.Path], out: str | pathlib.Path, *, title: str | None = None
) -> dict[str, float]:
    """Recipes compared at equal wall-clock time: validation bits/token against the minutes each run has
    trained (its records' `elapsed_s`), one line per run. Returns each run's last validation figure."""
    fig = Figure(figsize=(7, 4), dpi=120)
    ax = fig.subplots()
    last: dict[str, float] = {}
    for workdir in map(epath.Path, workdirs):
        points = [
            (r["elapsed_s"] / 60, r["val_bits_per_token"])
            for r in read_metrics(workdir / "metrics.jsonl")
            if isinstance(r.get("val_bits_per_token"), (int, float)) and "elapsed_s" in r
        ]
        if not points:
            raise UserError(
                f"no timed validation figures in {workdir / 'metrics.jsonl'}; "
                "was it trained with validation (train.eval_every) by this version?"
            )
        ax.plot(*zip(*points), "o-", ms=3, label=workdir.name)
        last[workdir.name] = points[-1][1]
    ax.set_xlabel("wall-clock minutes of training")
    ax.set_ylabel("validation bits per token")
    ax.set_title(title or "validation bits/token at equal time")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out)
    return last
