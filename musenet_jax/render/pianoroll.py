"""A piano-roll PNG of a token sequence: one bar per note, pitch against seconds, coloured by instrument."""

from __future__ import annotations

import os

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from musenet_jax.encoding.events import Events
from musenet_jax.encoding.families import FAMILIES
from musenet_jax.encoding.tokenizer import Tokenizer


def family_colours() -> dict[str, tuple[float, float, float, float]]:
    """One fixed colour per instrument family (tab10 has exactly ten)."""
    cmap = colormaps["tab10"]
    return {name: cmap(i) for i, name in enumerate(FAMILIES)}


def save_pianoroll(
    tokenizer: Tokenizer,
    ids: np.ndarray,
    path: str | os.PathLike,
    *,
    prompt_seconds: float = 0.0,
    title: str = "",
) -> None:
    """Writes the roll of `ids` to `path`; a dashed line marks where the intro ends (`prompt_seconds`).
    A bare `Figure` (no pyplot): no global backend switch, so it is safe inside notebooks."""
    events = tokenizer.ids_to_events(ids)
    colours = family_colours()
    fig = Figure(figsize=(12, 4), dpi=100)
    ax = fig.subplots()
    for family in np.unique(events.family):
        rows = events.select(events.family == family)
        name = FAMILIES[int(family)]
        spans = np.stack([rows.start_s, np.maximum(rows.end_s - rows.start_s, 0.02)], axis=1)
        ax.barh(rows.pitch, spans[:, 1], left=spans[:, 0], height=0.8, color=colours[name], label=name)
    if prompt_seconds > 0:
        ax.axvline(prompt_seconds, color="black", linestyle="--", linewidth=0.8, label="end of intro")
    ax.set_xlabel("seconds")
    ax.set_ylabel("MIDI pitch")
    if len(events):
        ax.set_ylim(int(events.pitch.min()) - 2, int(events.pitch.max()) + 2)
        ax.legend(loc="upper right", fontsize="small", ncols=2)
    ax.set_title(title or f"{len(events)} notes")
    fig.tight_layout()
    fig.savefig(path)


def save_given_and_new(
    given: Events, new: Events, path: str | os.PathLike, *, marks: tuple[float, ...] = (), title: str = ""
) -> None:
    """The roll of an infilled or accompanied piece: the given notes pale, the new ones in full colour,
    dashed lines at `marks` (a filled span's bounds)."""
    colours = family_colours()
    fig = Figure(figsize=(12, 4), dpi=100)
    ax = fig.subplots()
    for events, alpha, kind in ((given, 0.3, "given"), (new, 1.0, "new")):
        for family in np.unique(events.family):
            rows = events.select(events.family == family)
            name = FAMILIES[int(family)]
            width = np.maximum(rows.end_s - rows.start_s, 0.02)
            ax.barh(
                rows.pitch,
                width,
                left=rows.start_s,
                height=0.8,
                color=colours[name],
                alpha=alpha,
                label=f"{kind} {name}",
            )
    for mark in marks:
        ax.axvline(mark, color="black", linestyle="--", linewidth=0.8)
    pitches = np.concatenate([given.pitch, new.pitch])
    if len(pitches):
        ax.set_ylim(int(pitches.min()) - 2, int(pitches.max()) + 2)
        ax.legend(loc="upper right", fontsize="small", ncols=2)
    ax.set_xlabel("seconds")
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title or f"{len(given)} given notes, {len(new)} new")
    fig.tight_layout()
    fig.savefig(path)
