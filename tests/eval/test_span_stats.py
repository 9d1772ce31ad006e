"""A filled span's statistics against the notes it replaced."""

import numpy as np

from musenet_jax.encoding.events import Events
from musenet_jax.eval.span_stats import in_span, shared_rate, span_stats, span_summary

STEP = 0.01


def line(pitches, start=0.0, gap=0.25):
    n = len(pitches)
    onsets = start + gap * np.arange(n)
    return Events.from_columns(onsets, onsets + gap, np.zeros(n), np.asarray(pitches), np.full(n, 80))


def test_shared_rate_counts_the_span_patterns_found_in_the_rest():
    rest = np.array([60, 62, 64, 65, 67])
    assert shared_rate(np.array([62, 64, 65, 67]), rest, 4) == 1.0
    assert shared_rate(np.array([62, 64, 65, 66, 67]), rest, 4) == 0.0
    assert np.isnan(shared_rate(np.array([60, 62]), rest, 4))


def test_in_span_moves_the_notes_to_zero_and_cuts_them_at_the_end():
    events = line([60, 62, 64, 65], gap=1.0)  # onsets 0, 1, 2, 3 s, each 1 s long
    span = in_span(events.replace(end_s=events.end_s + 0.5), 100, 300, STEP)  # [1 s, 3 s)
    np.testing.assert_allclose(span.start_s, [0.0, 1.0])
    np.testing.assert_allclose(span.end_s, [1.5, 2.0])  # the second note cut at the span's end


def test_a_fill_that_reuses_the_theme_scores_like_the_original_and_a_random_one_does_not():
    theme = [60, 62, 64, 65, 67, 65, 64, 62]
    rest = line(theme * 2)
    original = span_stats(line(theme), rest, STEP)
    assert original["shared_pitch_6"] == 1.0
    rng = np.random.default_rng(0)
    random_fill = span_stats(line(rng.integers(40, 90, len(theme))), rest, STEP)
    assert random_fill["shared_pitch_4"] < 0.5
    transposed = span_stats(line([p + 5 for p in theme]), rest, STEP)
    assert transposed["shared_interval_4"] == 1.0 and transposed["shared_pitch_4"] == 0.0
    summary = span_summary(original, [original, random_fill])
    assert summary["shared_pitch_6"]["original"] == 1.0
    assert summary["note_density"]["mean_abs_difference"] == 0.0  # same rhythm
    assert summary["shared_pitch_6"]["mean_abs_difference"] > 0.25
