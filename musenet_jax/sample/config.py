"""Sampling defaults: the co-composer's "creativity" knobs, how many candidates to draw and how long."""

from __future__ import annotations

import dataclasses

MAX_SECONDS = 3600.0  # one hour; MuseNet's pieces run up to 4 minutes
RANKINGS = ("likelihood", "critic")


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """Temperature, top-k / top-p truncation, candidate count and requested length."""

    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    num_samples: int = 4
    seconds: float = 30.0
    # How long the piece is meant to be, for the countdown embedding; 0 = it ends where sampling stops.
    # Longer makes the result the opening of a longer piece, to be continued (no ending written yet).
    piece_seconds: float = 0.0
    max_new_tokens: int = 0  # token budget per candidate; 0 = enough for `seconds` (sample/budget.py)
    seed: int = 0
    restrict_instruments: bool = True  # note-ons only of the requested (and intro's) instrument families
    # Rules from the training split's note facts (`data/note_facts.py`, `sample/grammar.py` rules 6, 7):
    pitch_range_rule: bool = True  # each family's note-ons within the pitches it plays in the data
    note_length_rule: bool = True  # release a note once it has sounded as long as the data's notes rarely do
    opening_note_rule: bool = True  # a piece from nothing opens with a note, not a rest (grammar rule 8)
    # Grammar rule 9: logit penalty of a note-on outside the key of the recent notes (0 = off).
    key_bias: float = 0.0
    # Grammar rule 11: logit bonus of the note that followed the melody's last few notes the last time they
    # were played (0 = off).
    motif_bias: float = 0.0
    # Grammar rule 13: logit bonus of the token that plays again what the piece played earlier, where the form
    # plan drawn from the composer's training pieces repeats a passage (0 = off; needs the run's note facts).
    form_bias: float = 0.0
    # Grammar rule 14: logit penalty of a note-on where no given note starts, and of a wait that lands off
    # the given onsets (accompaniment: the new part plays with the given one; 0 = off; docs/quality.md).
    onset_bias: float = 0.0
    # Grammar rule 12: a requested family rests at most this many seconds in the new music (at most half of
    # it), then plays next; 0 = off (a part the model was rarely shown may then stay silent).
    part_rest_s: float = 4.0
    # How `generate` orders its candidates: "likelihood" (the model's mean log-probability per token) or
    # "critic" (the inner critic's P(real)). The critic ranks only where its pick was measured to beat a
    # random pick on held-out requests; the bundled model's did not (docs/quality.md, "The inner critic").
    rank_by: str = "likelihood"

    def __post_init__(self) -> None:
        if not 0 <= self.temperature < float("inf"):  # also refuses NaN
            raise ValueError(
                f"sample.temperature must be finite and >= 0 (0 = greedy), got {self.temperature}"
            )
        if self.top_k < 0:
            raise ValueError(f"sample.top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"sample.top_p must be in (0, 1] (1 = off), got {self.top_p}")
        if self.num_samples < 1:
            raise ValueError(f"sample.num_samples must be at least 1, got {self.num_samples}")
        if not 0 < self.seconds <= MAX_SECONDS:
            raise ValueError(
                f"sample.seconds must be positive and at most {MAX_SECONDS:.0f} (one hour), "
                f"got {self.seconds}"
            )
        if not 0 <= self.piece_seconds <= MAX_SECONDS:
            raise ValueError(
                f"sample.piece_seconds must be in [0, {MAX_SECONDS:.0f}] (0 = ends with the sample), "
                f"got {self.piece_seconds}"
            )
        if not 0 <= self.key_bias < float("inf"):
            raise ValueError(f"sample.key_bias must be finite and >= 0 (0 = off), got {self.key_bias}")
        if not 0 <= self.motif_bias < float("inf"):
            raise ValueError(f"sample.motif_bias must be finite and >= 0 (0 = off), got {self.motif_bias}")
        if not 0 <= self.form_bias < float("inf"):
            raise ValueError(f"sample.form_bias must be finite and >= 0 (0 = off), got {self.form_bias}")
        if not 0 <= self.onset_bias < float("inf"):
            raise ValueError(f"sample.onset_bias must be finite and >= 0 (0 = off), got {self.onset_bias}")
        if not 0 <= self.part_rest_s <= MAX_SECONDS:
            raise ValueError(
                f"sample.part_rest_s must be in [0, {MAX_SECONDS:.0f}] (0 = off), got {self.part_rest_s}"
            )
        if self.rank_by not in RANKINGS:
            raise ValueError(f"sample.rank_by must be one of {', '.join(RANKINGS)}, got {self.rank_by!r}")
        if self.max_new_tokens < 0:
            raise ValueError(
                f"sample.max_new_tokens must be >= 0 (0 = derived from sample.seconds), "
                f"got {self.max_new_tokens}"
            )
