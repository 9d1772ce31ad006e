"""The evaluations of many checkpoints of one run, side by side: a table and bits/token against the step.

Both are made from the per-step reports (`app/eval_steps.py` writes one JSON per step), so they can be
redrawn at any time from what is on disk.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from musenet_jax.storage import save_figure

COLUMNS = ("step", "pieces", "tokens", "bits/token", "bits/note", "bits/second")


def steps_table(reports: Sequence[dict[str, Any]]) -> str:
    """A Markdown table, one row per step (in step order), then the best step by bits per token."""
    rows = sorted(reports, key=lambda r: r["step"])
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for r in rows:
        cells = (
            str(r["step"]),
            str(r["pieces"]),
            str(r["tokens"]),
            _number(r.get("bits_per_token")),
            _number(r.get("bits_per_note")),
            _number(r.get("bits_per_second")),
        )
        lines.append("| " + " | ".join(cells) + " |")
    if rows:
        best = min(rows, key=lambda r: r["bits_per_token"])
        lines.append("")
        lines.append(
            f"{len(rows)} steps on split {rows[0]['split']}; best: step {best['step']} "
            f"({best['bits_per_token']:.4f} bits/token)"
        )
    return "\n".join(lines) + "\n"


def plot_steps(reports: Sequence[dict[str, Any]], out: str | pathlib.Path, *, title: str) -> None:
    """Writes the PNG `out`: bits per token against the checkpoint step (drawn as `musenet-jax plot` does)."""
    rows = sorted(reports, key=lambda r: r["step"])
    fig = Figure(figsize=(7, 4), dpi=120)
    ax = fig.subplots()
    split = rows[0]["split"] if rows else "?"
    ax.plot([r["step"] for r in rows], [r["bits_per_token"] for r in rows], "o-", ms=3, label=split)
    ax.set_xlabel("step")
    ax.set_ylabel("bits per token")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
