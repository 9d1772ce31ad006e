"""What the training split says about notes, per instrument family: the pitches each family plays and how
long its notes last; and, per composer, which families its pieces pair and where they repeat (form plans).
Sampling may hold a model to these facts (`sample.pitch_range_rule`, `sample.note_length_rule`,
`sample.form_bias`): a small model samples pitches no piano plays, forgets to release its notes and never
brings a passage back, and all three show in a piece's statistics.

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
from musenet_jax.data.form_plans import Plan, composer_plans, piece_plan
from musenet_jax.data.pipeline import open_split
from musenet_jax.encoding.families import DRUMS, FAMILIES
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.encoding.vocab import UNKNOWN_COMPOSER
from musenet_jax.storage import read_json

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
    # Per composer, the pieces that carry each family (indexed like `FAMILIES`) and its piece count; empty
    # in facts recorded before pairings were counted.
    composer_family_pieces: tuple[tuple[str, tuple[int, ...], int], ...] = ()
    # Per composer, the form plans of its training pieces (`data/form_plans.py`: where each brings a passage
    # back), at most `PLANS_PER_COMPOSER`; empty in facts recorded before plans were kept.
    composer_plans: tuple[tuple[str, tuple[Plan, ...]], ...] = ()

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["composer_family_pieces"] = {
            name: {"pieces": total, "with_family": list(counts)}
            for name, counts, total in self.composer_family_pieces
        }
        data["composer_plans"] = {
            name: [{"length": length, "repeats": [list(r) for r in repeats]} for length, repeats in plans]
            for name, plans in self.composer_plans
        }
        return data

    @classmethod
    def from_dict(cls, data: dict) -> NoteFacts:
        pairs = tuple(
            (name, tuple(entry["with_family"]), int(entry["pieces"]))
            for name, entry in sorted(data.get("composer_family_pieces", {}).items())
        )
        plans = tuple(
            (name, tuple(_plan_from(plan) for plan in entry))
            for name, entry in sorted(data.get("composer_plans", {}).items())
        )
        return cls(
            **{
                f.name: tuple(data[f.name]) if f.name != "time_step_ms" else int(data[f.name])
                for f in dataclasses.fields(cls)
                if f.name not in ("composer_family_pieces", "composer_plans")
            },
            composer_family_pieces=pairs,
            composer_plans=plans,
        )

    def pairing(self, composer: str, family: int) -> tuple[int, int] | None:
        """(pieces of `composer` with `family`, pieces of `composer`) in the training split; None when the
        facts do not count pairings or have no piece of that composer."""
        for name, counts, total in self.composer_family_pieces:
            if name == composer:
                return counts[family], total
        return None

    def plans(self, composer: str) -> tuple[Plan, ...]:
        """The form plans of `composer`'s training pieces; empty when the facts keep none for it."""
        return dict(self.composer_plans).get(composer, ())


def _plan_from(data: dict) -> Plan:
    return int(data["length"]), tuple(tuple(int(v) for v in repeat) for repeat in data["repeats"])


def note_facts(tokenizer: Tokenizer, pieces: Iterable[np.ndarray]) -> NoteFacts:
    """The facts of token sequences `pieces` (e.g. every piece of the train split)."""
    families, pitches, lengths = [], [], []
    pairs: dict[str, np.ndarray] = {}
    totals: dict[str, int] = {}
    plans: dict[str, list[Plan]] = {}
    step_s = tokenizer.step_s
    for ids in pieces:
        ids = np.asarray(ids, np.int32)
        events = tokenizer.ids_to_events(ids)
        composer = tokenizer.composer_of(ids) or UNKNOWN_COMPOSER
        pairs.setdefault(composer, np.zeros(len(FAMILIES), np.int64))[np.unique(events.family)] += 1
        totals[composer] = totals.get(composer, 0) + 1
        plans.setdefault(composer, []).append(piece_plan(events, step_s))
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
    counted = tuple((name, tuple(int(c) for c in pairs[name]), totals[name]) for name in sorted(pairs))
    kept = tuple(composer_plans(plans).items())
    return NoteFacts(
        tuple(notes), tuple(low), tuple(high), tuple(hold), tokenizer.cfg.time_step_ms, counted, kept
    )


RARE_SHARE = 0.02  # a pairing in fewer than this share of a composer's training pieces is rare


def pairing_note(
    facts: NoteFacts | None, composer: str, families: Iterable[str], *, parts_play: bool = True
) -> str | None:
    """One line saying which requested families the composer's training pieces rarely or never carry (a
    model seldom plays what its data never paired); None when all are common or the facts cannot tell.
    `parts_play`: whether grammar rule 12 (`sample.part_rest_s`) makes such parts play."""
    if facts is None:
        return None
    notes = []
    for name in families:
        found = facts.pairing(composer, FAMILIES.index(name))
        if found is None:
            return None
        with_family, total = found
        if with_family < RARE_SHARE * total:
            notes.append(f"{name} in {with_family} of {total}")
    if not notes:
        return None
    outcome = (
        "their parts play (sample.part_rest_s) but are the model's guess"
        if parts_play
        else "with sample.part_rest_s=0 they may stay silent"
    )
    return (
        f"note: the training data rarely or never pairs {composer} with these instruments "
        f"({'; '.join(notes)} pieces); {outcome}"
    )


def split_note_facts(data: DataConfig, tokenizer: Tokenizer, split: str = "train") -> NoteFacts:
    """The facts of every piece of one split of the prepared dataset."""
    source = open_split(data, tokenizer.cfg, split)
    return note_facts(tokenizer, (source[i]["ids"] for i in range(len(source))))


def save_note_facts(workdir: str | os.PathLike, facts: NoteFacts) -> None:
    (epath.Path(workdir) / FACTS_FILE).write_text(json.dumps(facts.to_dict(), indent=2) + "\n")


def load_note_facts(workdir: str | os.PathLike) -> NoteFacts | None:
    """The run's (or bundle's) facts, or None for a run trained before they were recorded."""
    path = epath.Path(str(workdir)) / FACTS_FILE
    if not path.is_file():
        return None
    remedy = (
        "restore it, or delete it: sampling then goes without the data's pitch ranges and note lengths "
        "(a run's next `musenet-jax train` writes it again)"
    )
    return NoteFacts.from_dict(read_json(path, remedy))
