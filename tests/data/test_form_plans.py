"""Form plans (`data/form_plans.py`): a tune played twice has one repeat of its length, found exactly in a
score and within the tolerance in a performance; a random walk and a drone have none; the plans ride in the
note facts per composer, and facts recorded before them load with none."""

from __future__ import annotations

import numpy as np

from musenet_jax.app.sources import bundled_model_dir
from musenet_jax.data.form_plans import PLANS_PER_COMPOSER, composer_plans, piece_plan
from musenet_jax.data.note_facts import NoteFacts, load_note_facts, note_facts
from musenet_jax.encoding.events import Events
from musenet_jax.encoding.families import FAMILIES
from musenet_jax.encoding.tokenizer import Tokenizer

TOKENIZER = Tokenizer()
STEP_S = TOKENIZER.step_s
PIANO = FAMILIES.index("piano")
TUNE = [67, 64, 64, 65, 62, 62, 60, 62, 64, 65, 67, 67]  # twelve notes, five pitches
NOTE_STEPS = 25


def line(pitches: list[int], onsets: list[float] | None = None) -> Events:
    """One piano note per onset (seconds), each sounding until the next."""
    starts = np.arange(len(pitches)) * NOTE_STEPS * STEP_S if onsets is None else np.asarray(onsets)
    ends = np.r_[starts[1:], starts[-1] + NOTE_STEPS * STEP_S]
    n = len(pitches)
    return Events(
        starts, ends, np.full(n, PIANO, np.int8), np.asarray(pitches, np.int16), np.full(n, 80, np.int16)
    )


def test_a_tune_played_twice_has_one_repeat_of_its_length():
    length = len(TUNE) * NOTE_STEPS
    piece_length, repeats = piece_plan(line(TUNE + TUNE + [72, 71, 69, 67]), STEP_S)
    assert repeats == ((length, length, 2 * length),)  # from the second playing to the new ending
    assert piece_length == 2 * length + 4 * NOTE_STEPS


def test_a_performed_repeat_is_found_within_the_tolerance():
    rng = np.random.default_rng(0)
    pitches = TUNE + TUNE + [72, 71, 69, 67]
    onsets = np.arange(len(pitches)) * NOTE_STEPS * STEP_S + rng.uniform(-0.01, 0.01, len(pitches))
    _, ((start, lag, end),) = piece_plan(line(pitches, list(onsets)), STEP_S)
    length = len(TUNE) * NOTE_STEPS
    assert abs(lag - length) <= 2 and abs(start - length) <= 2 and abs(end - 2 * length) <= 2


def test_a_random_walk_and_a_drone_bring_nothing_back():
    rng = np.random.default_rng(1)
    walk = list(60 + np.cumsum(rng.choice([-2, -1, 1, 2], 48)))
    assert piece_plan(line(walk), STEP_S)[1] == ()
    assert piece_plan(line([64] * 48), STEP_S)[1] == ()  # repeats at every lag, but is no passage
    assert piece_plan(line([64, 65] * 24), STEP_S)[1] == ()  # a trill: two pitches


def test_plans_ride_in_the_note_facts_per_composer():
    twice = TOKENIZER.events_to_ids(line(TUNE + TUNE + [72, 71, 69, 67]), composer="bach")
    once = TOKENIZER.events_to_ids(line(TUNE), composer="bach")
    folk = TOKENIZER.events_to_ids(line(TUNE * 3), composer="folk")
    facts = note_facts(TOKENIZER, [twice, once, folk])
    length = len(TUNE) * NOTE_STEPS
    ending = 4 * NOTE_STEPS
    # the piece without repeats counts too
    assert facts.plans("bach") == ((2 * length + ending, ((length, length, 2 * length),)), (length, ()))
    last_onset = (
        3 * length - NOTE_STEPS
    )  # the run reaches the piece's last note: it ends just after its onset
    assert facts.plans("folk") == ((3 * length, ((length, length, last_onset + 1),)),)  # played three times
    assert facts.plans("mozart") == ()
    assert NoteFacts.from_dict(facts.to_dict()) == facts
    before = {k: v for k, v in facts.to_dict().items() if k != "composer_plans"}
    assert NoteFacts.from_dict(before).composer_plans == ()


def test_a_composer_keeps_at_most_so_many_plans():
    plans = [(500, ((i, 200, i + 100),)) for i in range(PLANS_PER_COMPOSER + 10)]
    kept = composer_plans({"folk": plans, "bach": plans[:3]})
    assert len(kept["folk"]) == PLANS_PER_COMPOSER and set(kept["folk"]) <= set(plans)
    assert kept["bach"] == tuple(plans[:3])


def test_the_bundled_models_facts_carry_its_composers_plans():
    """Exported with its training split's plans: folk tunes repeat a strain far more often than Palestrina."""
    facts = load_note_facts(bundled_model_dir())
    repeating = {
        name: np.mean([bool(repeats) for _, repeats in facts.plans(name)]) for name in ("folk", "palestrina")
    }
    assert (
        len(facts.plans("folk")) == PLANS_PER_COMPOSER
        and repeating["folk"] > 0.6 > 0.3 > repeating["palestrina"]
    )
