"""eval/form_stats.py, controls.py and gates.py on real scores (music21's corpus exported to MIDI): each
statistic tells a piece that has the property from a control that lacks it, and the gate fails the controls
while the real pieces pass."""

import numpy as np
import pytest
from midi_corpus import export_corpus_scores

from musenet_jax.encoding.events import Events
from musenet_jax.encoding.families import FAMILIES
from musenet_jax.encoding.melody import melody_line
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.eval.controls import opening_then_drone, opening_then_random, random_walk, shuffled_pitch
from musenet_jax.eval.form_stats import (
    beat_grid_rate,
    form_stats,
    recurring_rate,
    self_similarity,
    theme_like,
    window_keys,
)
from musenet_jax.eval.gates import GATE_STD, control_reports, gate_piece_stats

TOKENIZER = Tokenizer()
CHORALE = "bach/bwv66.6"  # seconds to export
LONGER = ("mozart/k80/movement1", "monteverdi/madrigal.3.1")  # a quartet movement with themes, a madrigal


def exported(tmp_path_factory, names):
    folder = tmp_path_factory.mktemp("form_scores")
    return {
        name: TOKENIZER.midi_to_events(str(p)) for name, p in zip(names, export_corpus_scores(folder, names))
    }


@pytest.fixture(scope="module")
def chorale(tmp_path_factory):
    return exported(tmp_path_factory, (CHORALE,))[CHORALE]


@pytest.fixture(scope="module")
def pieces(tmp_path_factory, chorale):
    return {CHORALE: chorale, **exported(tmp_path_factory, LONGER)}


def played_twice(events: Events) -> Events:
    """A piece followed by itself (AA form)."""
    length = float(events.end_s.max())
    return Events.from_columns(
        np.r_[events.start_s, events.start_s + length],
        np.r_[events.end_s, events.end_s + length],
        np.r_[events.family, events.family],
        np.r_[events.pitch, events.pitch],
        np.r_[events.velocity, events.velocity],
    ).sorted()


def test_a_tune_played_twice_recurs_and_a_random_walk_does_not(chorale):
    rng = np.random.default_rng(0)
    twice = form_stats(played_twice(chorale))
    walk = form_stats(random_walk(played_twice(chorale), rng))
    for n in (4, 6, 8):
        assert twice[f"recurring_pitch_{n}"] > 0.4  # the whole second half comes back
        assert twice[f"recurring_interval_{n}"] > 0.4
    assert walk["recurring_pitch_8"] < 0.02 and walk["recurring_pitch_6"] < 0.05


@pytest.mark.slow
def test_real_themes_recur_and_shuffling_their_pitches_removes_them(pieces):
    quartet = pieces["mozart/k80/movement1"]
    real = form_stats(quartet)
    shuffled = form_stats(shuffled_pitch(quartet, np.random.default_rng(0)))
    assert real["recurring_pitch_6"] > 0.3 and real["recurring_interval_6"] > 0.3
    assert shuffled["recurring_pitch_6"] < 0.05 and shuffled["recurring_interval_6"] < 0.05
    assert shuffled["self_similarity"] < real["self_similarity"] - 0.2


def test_recurring_rate_counts_only_patterns_that_ended_before():
    assert recurring_rate(np.array([60, 62, 64, 60, 62, 64]), 3) == pytest.approx(1 / 4)
    assert recurring_rate(np.array([60] * 8), 4) == pytest.approx(1 / 5)  # overlapping copies do not count
    assert np.isnan(recurring_rate(np.array([60, 62, 64]), 2))


def test_a_drone_is_no_theme_however_often_it_repeats(chorale):
    """One pitch over and over recurs at every position; it must not count as a theme coming back."""
    assert recurring_rate(np.array([60] * 20), 4, theme_like(np.array([60] * 20), 4)) == 0
    trill = np.array([60, 62] * 10)
    assert recurring_rate(trill, 4) > 0.5 and recurring_rate(trill, 4, theme_like(trill, 4)) == 0
    tune = np.array([60, 62, 64, 65, 60, 62, 64, 65])
    assert recurring_rate(tune, 4, theme_like(tune, 4)) == recurring_rate(tune, 4) > 0
    twice = played_twice(chorale)
    drone = opening_then_drone(twice, np.random.default_rng(0))
    assert form_stats(drone)["recurring_pitch_6"] < 0.1 < form_stats(twice)["recurring_pitch_6"]


def test_self_similarity_of_a_repeat_is_higher_than_of_the_piece(chorale):
    line = melody_line(chorale)
    assert self_similarity(np.r_[line, line]) > self_similarity(line) + 0.2


def test_a_piece_that_leaves_its_key_and_returns(chorale):
    head = chorale.select(chorale.start_s < 5.0)
    moved = head.replace(start_s=head.start_s + 5.0, end_s=head.end_s + 5.0, pitch=head.pitch + 6)
    back = head.replace(start_s=head.start_s + 10.0, end_s=head.end_s + 10.0)

    def joined(*parts):
        columns = ("start_s", "end_s", "family", "pitch", "velocity")
        return Events.from_columns(
            *(np.concatenate([getattr(p, c) for p in parts]) for c in columns)
        ).sorted()

    keys = window_keys(joined(head, moved, back))
    assert len(keys) == 3 and keys[0] == keys[2] and keys[1] != keys[0]
    returns = form_stats(joined(head, moved, back))
    leaves = form_stats(joined(head, moved))
    assert returns["key_return"] == 1.0 and leaves["key_return"] == 0.0
    assert returns["key_stability"] == pytest.approx(2 / 3)


def test_score_onsets_sit_on_the_grid_and_jittered_ones_do_not(chorale):
    assert beat_grid_rate(chorale) == 1.0
    onsets, which = np.unique(chorale.start_s, return_inverse=True)
    jitter = np.random.default_rng(0).uniform(-0.06, 0.06, len(onsets))[which]  # a chord moves together
    assert beat_grid_rate(chorale.replace(start_s=chorale.start_s + jitter)) < 0.5


def test_a_requested_family_that_never_plays_counts(chorale):
    playing = np.unique(chorale.family).tolist()
    silent = next(f for f in range(len(FAMILIES)) if f not in playing)
    assert form_stats(chorale, playing)["families_present"] == 1.0
    assert form_stats(chorale, [*playing, silent])["families_present"] == pytest.approx(
        len(playing) / (len(playing) + 1)
    )


@pytest.mark.slow
def test_controls_keep_the_rhythm_and_replace_only_pitches(pieces):
    quartet = pieces["mozart/k80/movement1"]
    rng = np.random.default_rng(1)
    for control in (
        shuffled_pitch(quartet, rng),
        random_walk(quartet, rng),
        opening_then_random(quartet, rng),
        opening_then_drone(quartet, rng),
    ):
        assert np.array_equal(control.start_s, quartet.start_s) and np.array_equal(
            control.family, quartet.family
        )
    half = opening_then_random(quartet, rng)
    first = quartet.start_s < quartet.end_s.max() / 2
    assert np.array_equal(half.pitch[first], quartet.pitch[first])
    assert not np.array_equal(half.pitch[~first], quartet.pitch[~first])


@pytest.mark.slow
def test_real_pieces_pass_the_gate_and_every_control_fails_it(pieces):
    real = list(pieces.values())
    families = [np.unique(e.family).tolist() for e in real]
    step_s = TOKENIZER.step_s
    reference = [gate_piece_stats(e, step_s, f) for e, f in zip(real, families)]
    reports = control_reports(real, families, ["x"] * len(real), reference, ["x"] * len(real), step_s)
    assert reports["real_heldout"]["fails"] == []
    for name in ("shuffled_pitch", "random_walk", "opening_then_random", "opening_then_drone"):
        worst = max(d for d in reports[name]["distance"].values() if d is not None)
        assert reports[name]["fails"] and worst > GATE_STD, name
