"""What the training split says about notes, per instrument family: the pitches each family plays and how
long its notes last. Sampling may hold a model to these facts (`sample.pitch_range_rule`,
`sample.note_length_rule`): a small model samples pitches no piano plays and forgets to release its notes,
and both show at once in a piece's statistics.

Computed once from the train split when training starts and stored beside the checkpoints as
`W/note_facts.json`, so a trained run carries them without its dataset.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable

import numpy as np
from etils import epath

from musenet_jax.data.config import DataConfig
from musenet_jax.data.pipeline import open_split
from musenet_jax.encoding.families import DRUMS, FAMILIES
from musenet_jax.encoding.tokenizer import Tokenizer

FACTS_FILE = "note_facts.json"
LENGTH_QUANTILE = 0.99  # notes sounding longer than this quantile of their family's lengths are rare


@dataclasses.dataclass(frozen=True)
class NoteFacts:
    """Per family (indexed like `FAMILIES`): note count, lowest and highest pitch, and the
    `LENGTH_QUANTILE` of note lengths in time steps (0 where the family has no melodic notes)."""

    notes: tuple[int, ...]
    pitch_low: tuple[int, ...]
    pitch_high: tuple[int, ...]
    length_steps: tuple[int, ...]
    time_step_ms: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NoteFacts:
        return cls(
            **{
                f.name: tuple(data[f.name]) if f.name != "time_step_ms" else int(data[f.name])
                for f in dataclasses.fields(cls)
            }
        )


def note_facts(tokenizer: Tokenizer, pieces: Iterable[np.ndarray]) -> NoteFacts:
    """The facts of token sequences `pieces` (e.g. every piece of the train split)."""
    families, pitches, lengths = [], [], []
    step_s = tokenizer.step_s
    for ids in pieces:
        events = tokenizer.ids_to_events(np.asarray(ids, np.int32))
        families.append(events.family.astype(np.int64))
        pitches.append(events.pitch.astype(np.int64))
        lengths.append(np.rint((events.end_s - events.start_s) / step_s).astype(np.int64))
    family = np.concatenate(families) if families else np.zeros(0, np.int64)
    pitch = np.concatenate(pitches) if pitches else np.zeros(0, np.int64)
    length = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    notes, low, high, hold = [], [], [], []
    for f in range(len(FAMILIES)):
        mine = family == f
        notes.append(int(mine.sum()))
        low.append(int(pitch[mine].min()) if mine.any() else -1)
        high.append(int(pitch[mine].max()) if mine.any() else -1)
        melodic = mine.any() and f != DRUMS
        hold.append(int(np.ceil(np.quantile(length[mine], LENGTH_QUANTILE))) if melodic else 0)
    return NoteFacts(tuple(notes), tuple(low), tuple(high), tuple(hold), tokenizer.cfg.time_step_ms)


def split_note_facts(data: DataConfig, tokenizer: Tokenizer, split: str = "train") -> NoteFacts:
    """The facts of every piece of one split of the prepared dataset."""
    source = open_split(data, tokenizer.cfg, split)
    return note_facts(tokenizer, (source[i]["ids"] for i in range(len(source))))


def save_note_facts(workdir: str | os.PathLike, facts: NoteFacts) -> None:
    (epath.Path(workdir) / FACTS_FILE).write_text(json.dumps(facts.to_dict(), indent=2) + "\n")


def load_note_facts(workdir: str | os.PathLike) -> NoteFacts | None:
    """The run's (or bundle's) facts, or None for a run trained before they were recorded."""
    path = epath.Path(str(workdir)) / FACTS_FILE
    return NoteFacts.from_dict(json.loads(path.read_text())) if path.is_file() else None
