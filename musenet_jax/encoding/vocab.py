"""The vocabulary: the one module that knows which id means which token.

Layout, in id order: `<pad>`, `start`, `end`, one token per composer (+ `unknown`: the config's
`encoding.composers`, which `prepare` extends with the labels a dataset carries), one per instrument
family, `wait:1..W`, then note tokens `family:vB:pitch` for every family, velocity bin B (0 = note-off;
drums have no note-off) and pitch in [pitch_min, pitch_max]. Note ids are computed arithmetically, so
encoding and decoding are vectorized. With `encoding.anticipation_s` > 0 (and only then) two groups follow:
the `anticipate` flag and one control token `ctl:family:vB:pitch` per note token, in the same order
(`encoding/anticipation.py`); every id before them means what it means without anticipation.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json

import numpy as np

from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.encoding.families import DRUMS, FAMILIES
from musenet_jax.errors import unknown_choice

KIND_PAD, KIND_START, KIND_END, KIND_COMPOSER, KIND_INSTRUMENT, KIND_WAIT, KIND_NOTE_ON, KIND_NOTE_OFF = (
    range(8)
)
KIND_ANTICIPATE, KIND_CONTROL_ON, KIND_CONTROL_OFF = range(8, 11)  # only with anticipation
KIND_FIM_SUFFIX, KIND_FIM_MIDDLE = range(11, 13)  # only with encoding.span_infill=fill_in_middle
KIND_NAMES: tuple[str, ...] = (
    "pad",
    "start",
    "end",
    "composer",
    "instrument",
    "wait",
    "note_on",
    "note_off",
    "anticipate",
    "control_on",
    "control_off",
    "fim_suffix",
    "fim_middle",
)
ANTICIPATION_KINDS = frozenset(KIND_NAMES[KIND_ANTICIPATE:KIND_FIM_SUFFIX])
FIM_KINDS = frozenset(KIND_NAMES[KIND_FIM_SUFFIX:])

UNKNOWN_COMPOSER = "unknown"
# `max_seconds` decides which notes are kept, not what a token means, so it cannot change the fingerprint:
# its slot in the hashed config keeps the value every fingerprint was made with before pieces were stored
# whole, and checkpoints made since stay valid. (Datasets record their cut themselves: data/builder.py.)
_FINGERPRINT_PINNED = {"max_seconds": 240.0}
PITCH_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def label_name(text: str) -> str:
    """A dataset's label (a folder name, a composer column) as a composer token name: lower case, inner
    spaces as `_` (`Bill Evans` -> `bill_evans`), so it reads as one word in a token string."""
    return "_".join(text.strip().lower().split())


def pitch_name(pitch: int) -> str:
    """MIDI 60 -> 'C4' (scientific pitch notation, C-1 = 0)."""
    return f"{PITCH_NAMES[pitch % 12]}{pitch // 12 - 1}"


class Vocabulary:
    """Ids <-> token strings and the arithmetic of note ids, for one `EncodingConfig`."""

    def __init__(self, cfg: EncodingConfig = EncodingConfig()):
        self.cfg = cfg
        self.composers: tuple[str, ...] = tuple(dict.fromkeys((*cfg.composers, UNKNOWN_COMPOSER)))
        self.families: tuple[str, ...] = FAMILIES
        self.num_pitches = cfg.pitch_max - cfg.pitch_min + 1
        self.pad_id, self.start_id, self.end_id = 0, 1, 2
        self.composer_base = 3
        self.instrument_base = self.composer_base + len(self.composers)
        self.wait_base = self.instrument_base + len(FAMILIES)  # id of wait:1
        self.note_base = self.wait_base + cfg.max_wait_steps
        # Per family: first note id and lowest velocity bin (drums start at bin 1: no note-off).
        rows = [cfg.velocity_bins + (f != DRUMS) for f in range(len(FAMILIES))]
        starts = np.concatenate([[0], np.cumsum(rows)[:-1]]) * self.num_pitches + self.note_base
        self.family_note_base = starts.astype(np.int64)
        self.family_min_bin = np.array([1 if f == DRUMS else 0 for f in range(len(FAMILIES))], np.int64)
        self.note_end = int(self.note_base + sum(rows) * self.num_pitches)  # one past the last note id
        self.anticipation_steps = round(cfg.anticipation_s * 1000 / cfg.time_step_ms)
        self.anticipates = self.anticipation_steps > 0
        # With anticipation: the flag, then control ids = note ids + control_shift.
        self.anticipate_id = self.note_end if self.anticipates else -1
        self.control_base = self.note_end + 1
        self.control_shift = self.control_base - self.note_base
        n_notes = self.note_end - self.note_base
        # With fill-in-the-middle: `fim:suffix` and `fim:middle` after the controls.
        self.fills_in_middle = self.anticipates and cfg.span_infill == "fill_in_middle"
        self.fim_suffix_id = self.control_base + n_notes if self.fills_in_middle else -1
        self.fim_middle_id = self.fim_suffix_id + 1 if self.fills_in_middle else -1
        self.size = self.control_base + n_notes if self.anticipates else self.note_end
        self.size += 2 if self.fills_in_middle else 0
        self._build_tables(rows)

    def _build_tables(self, rows: list[int]) -> None:
        size = self.size
        kinds = np.zeros(size, np.int8)
        waits = np.zeros(size, np.int32)
        # Note id -> (family, bin, pitch); -1 elsewhere.
        note_family = np.full(size, -1, np.int16)
        note_bin = np.full(size, -1, np.int16)
        note_pitch = np.full(size, -1, np.int16)
        kinds[[self.pad_id, self.start_id, self.end_id]] = (KIND_PAD, KIND_START, KIND_END)
        kinds[self.composer_base : self.instrument_base] = KIND_COMPOSER
        kinds[self.instrument_base : self.wait_base] = KIND_INSTRUMENT
        kinds[self.wait_base : self.note_base] = KIND_WAIT
        waits[self.wait_base : self.note_base] = np.arange(1, self.cfg.max_wait_steps + 1)
        for family, n_rows in enumerate(rows):
            base = self.family_note_base[family]
            ids = np.arange(base, base + n_rows * self.num_pitches)
            offset = ids - base
            bins = offset // self.num_pitches + self.family_min_bin[family]
            note_family[ids] = family
            note_bin[ids] = bins
            note_pitch[ids] = offset % self.num_pitches + self.cfg.pitch_min
            kinds[ids] = np.where(bins == 0, KIND_NOTE_OFF, KIND_NOTE_ON)
        if self.anticipates:
            kinds[self.anticipate_id] = KIND_ANTICIPATE
            notes = kinds[self.note_base : self.note_end]
            controls = slice(self.control_base, self.control_base + len(notes))
            kinds[controls] = np.where(notes == KIND_NOTE_ON, KIND_CONTROL_ON, KIND_CONTROL_OFF)
        if self.fills_in_middle:
            kinds[[self.fim_suffix_id, self.fim_middle_id]] = (KIND_FIM_SUFFIX, KIND_FIM_MIDDLE)
        self.token_kinds, self.wait_steps = kinds, waits
        self.note_family, self.note_bin, self.note_pitch = note_family, note_bin, note_pitch

    # ---- ids of named tokens -------------------------------------------------------------------
    def composer_id(self, name: str | None) -> int:
        """Id of a composer token; None means `unknown`; a misspelt name lists the valid ones."""
        name = UNKNOWN_COMPOSER if name is None else label_name(name)
        if name not in self.composers:
            raise unknown_choice("composer", name, self.composers)
        return self.composer_base + self.composers.index(name)

    def instrument_id(self, family: str | int) -> int:
        if isinstance(family, str):
            if family not in FAMILIES:
                raise unknown_choice("instrument", family, FAMILIES)
            family = FAMILIES.index(family)
        return self.instrument_base + int(family)

    def wait_id(self, steps: int) -> int:
        return self.wait_base + steps - 1

    def note_ids(self, family: np.ndarray, velocity_bin: np.ndarray, pitch: np.ndarray) -> np.ndarray:
        """Vectorized (family, bin, pitch) -> id; bin 0 is a note-off (not valid for drums)."""
        family = np.asarray(family, np.int64)
        return (
            self.family_note_base[family]
            + (np.asarray(velocity_bin, np.int64) - self.family_min_bin[family]) * self.num_pitches
            + (np.asarray(pitch, np.int64) - self.cfg.pitch_min)
        ).astype(np.int32)

    # ---- velocity bins -------------------------------------------------------------------------
    def velocity_to_bin(self, velocity: np.ndarray) -> np.ndarray:
        """MIDI velocity 1..127 -> bin 1..B (equal-width bins)."""
        v = np.clip(np.asarray(velocity, np.int64), 1, 127)
        return (1 + (v - 1) * self.cfg.velocity_bins // 127).astype(np.int16)

    def bin_to_velocity(self, velocity_bin: np.ndarray) -> np.ndarray:
        """Bin -> the velocity at the centre of its range (maps back to the same bin)."""
        b = np.asarray(velocity_bin, np.int64)
        low = 1 + -(-(b - 1) * 127 // self.cfg.velocity_bins)
        high = 1 + -(-b * 127 // self.cfg.velocity_bins) - 1
        return ((low + np.minimum(high, 127)) // 2).astype(np.int16)

    # ---- strings ---------------------------------------------------------------------------------
    @functools.cached_property
    def strings(self) -> tuple[str, ...]:
        out = ["<pad>", "start", "end"]
        out += [f"composer:{c}" for c in self.composers]
        out += [f"instrument:{f}" for f in FAMILIES]
        out += [f"wait:{n}" for n in range(1, self.cfg.max_wait_steps + 1)]
        ids = np.arange(self.note_base, self.note_end)
        notes = [
            f"{FAMILIES[f]}:v{b}:{pitch_name(p)}"
            for f, b, p in zip(self.note_family[ids], self.note_bin[ids], self.note_pitch[ids])
        ]
        out += notes
        if self.anticipates:
            out += ["anticipate", *(f"ctl:{note}" for note in notes)]
        if self.fills_in_middle:
            out += ["fim:suffix", "fim:middle"]
        return tuple(out)

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.strings)}

    def string(self, token_id: int) -> str:
        return self.strings[int(token_id)]

    def id(self, token: str) -> int:
        if token not in self._index:
            raise unknown_choice(
                "token", token, [s for s in self.strings if ":" not in s or s.startswith("composer")]
            )
        return self._index[token]

    def groups(self) -> dict[str, int]:
        """Token count per kind, for `musenet-jax vocab`."""
        counts = np.bincount(self.token_kinds, minlength=len(KIND_NAMES))
        return {
            name: int(n)
            for name, n in zip(KIND_NAMES, counts)
            if (self.anticipates or name not in ANTICIPATION_KINDS)
            and (self.fills_in_middle or name not in FIM_KINDS)
        }

    def fingerprint(self) -> str:
        """sha256 of the token strings and the encoding config: datasets and checkpoints must agree on it."""
        config = dataclasses.asdict(self.cfg) | _FINGERPRINT_PINNED
        if not self.anticipates:  # off: the same fingerprint as before the switch existed
            del config["anticipation_s"]
        # the first order (or none): the same fingerprint as before the order existed
        if not self.anticipates or self.cfg.anticipation_order == "controls_first":
            del config["anticipation_order"]
        if not self.fills_in_middle:  # anticipated spans (or none): the fingerprint as before the switch
            del config["span_infill"]
        payload = json.dumps({"tokens": self.strings, "config": config}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


@functools.lru_cache(maxsize=16)
def vocabulary(cfg: EncodingConfig = EncodingConfig()) -> Vocabulary:
    """The vocabulary of `cfg`, built once per process and encoding: a vocabulary never changes, and the
    tokenizer, the dataset builder and its encoding check all need the same one."""
    return Vocabulary(cfg)
