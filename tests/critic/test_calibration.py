"""critic/calibration.py: a calibrated score has ECE near 0, an overconfident one does not."""

import numpy as np
import pytest

from musenet_jax.critic.calibration import reliability


def test_calibrated_scores_have_small_error_and_overconfident_ones_large():
    rng = np.random.default_rng(0)
    probs = rng.uniform(size=20_000)
    labels = rng.uniform(size=probs.shape) < probs  # real with exactly the stated probability
    assert reliability(probs, labels)["ece"] < 0.02
    overconfident = np.where(probs > 0.5, 0.99, 0.01)
    assert reliability(overconfident, labels)["ece"] > 0.2


def test_bins_hold_counts_and_shares():
    report = reliability(np.array([0.05, 0.05, 0.95, 0.95]), np.array([0, 1, 1, 1]))
    assert [b["n"] for b in report["bins"]] == [2, 2]
    assert report["bins"][0]["share_real"] == 0.5 and report["bins"][1]["share_real"] == 1.0
    assert report["ece"] == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)
    with pytest.raises(ValueError):
        reliability(np.array([0.5]), np.array([1, 0]))
