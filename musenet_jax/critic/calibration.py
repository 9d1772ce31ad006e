"""Is the critic's P(real) a probability? Expected calibration error and the reliability curve on held-out
real pieces and samples: a critic that ranks well (high AUC) can still say 0.99 where half the pieces are
real, and its number then means little to a user."""

from __future__ import annotations

import numpy as np


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict[str, object]:
    """{"ece": the bins' |share real - mean P(real)| weighted by their size, "bins": per non-empty bin of
    equal width on [0, 1] its range, count, mean P(real) and share of real pieces}. labels: 1 = real."""
    probs = np.asarray(probs, np.float64).ravel()
    labels = np.asarray(labels, np.float64).ravel()
    if probs.shape != labels.shape or not len(probs):
        raise ValueError(f"need as many labels as probabilities, got {len(probs)} and {len(labels)}")
    index = np.minimum((probs * bins).astype(np.int64), bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        mine = index == b
        if not mine.any():
            continue
        confidence, share = float(probs[mine].mean()), float(labels[mine].mean())
        ece += mine.sum() / len(probs) * abs(share - confidence)
        rows.append({"low": b / bins, "high": (b + 1) / bins, "n": int(mine.sum()), "p_real": confidence,
                     "share_real": share})  # fmt: skip
    return {"ece": float(ece), "bins": rows}
