"""Does the inner critic earn its place? For each of N requests conditioned like real pieces, K candidates
are sampled; the critic's pick, the model's own likeliest pick (mean log-probability) and random picks are
compared on how far their musical statistics lie from the split's (Wasserstein distance in split standard
deviations, `eval/music_stats.py`). Random picks are drawn many times, giving a mean and a spread, and the
share of random draws the critic's pick beats."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from musenet_jax.app.run import Run
from musenet_jax.encoding.families import FAMILIES
from musenet_jax.errors import UserError
from musenet_jax.eval.music_stats import STAT_NAMES, distances, opening, piece_stats, stats_table
from musenet_jax.sample.budget import token_budget
from musenet_jax.sample.conditioning import request_like


def measure_reranking(
    run: Run,
    pieces: Sequence[np.ndarray],
    *,
    requests: int = 16,
    candidates: int = 4,
    random_draws: int = 1000,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """The report as a JSON-able dict: per pick rule ("critic", "likeliest", "random") the distance of
    each statistic; for "random" the mean and standard deviation over `random_draws` draws, and
    "critic_beats_random" the share of those draws whose distance the critic's pick undercuts."""
    if requests < 1 or candidates < 2:
        raise UserError(f"need at least 1 request and 2 candidates, got {requests} and {candidates}")
    tokenizer, seconds = run.tokenizer, run.cfg.sample.seconds
    critic = run.trained_critic()
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(pieces), size=requests, replace=requests > len(pieces))
    sampler = run.sampler()
    budget = token_budget(seconds, len(FAMILIES), run.cfg.sample.max_new_tokens)
    stats, critic_scores, logprobs = [], [], []  # [request][candidate]
    for n, index in enumerate(chosen):
        request = request_like(tokenizer, pieces[index], seconds)
        drawn = sampler.sample([request] * candidates, max_new_tokens=budget, seed=seed + n)
        critic_scores.append(critic.score([c.ids for c in drawn]))
        logprobs.append([c.mean_logprob for c in drawn])
        stats.append([piece_stats(tokenizer.ids_to_events(c.ids), tokenizer.step_s) for c in drawn])
        if progress is not None:
            progress(1)

    step_s = tokenizer.step_s
    reference_stats = [piece_stats(opening(tokenizer.ids_to_events(p), seconds), step_s) for p in pieces]
    reference = stats_table(reference_stats)

    def picked(choice: Sequence[int]) -> dict[str, float | None]:
        return distances(stats_table([stats[r][c] for r, c in enumerate(choice)]), reference)

    critic_pick = [int(np.argmax(s)) for s in critic_scores]
    critic = picked(critic_pick)
    draws = [picked(rng.integers(candidates, size=requests)) for _ in range(random_draws)]
    random_stats: dict[str, dict[str, float | None]] = {}
    beats: dict[str, float | None] = {}
    for name in STAT_NAMES:
        values = np.array([d[name] for d in draws if d[name] is not None], np.float64)
        defined = len(values) and critic[name] is not None
        random_stats[name] = {
            "mean": float(values.mean()) if len(values) else None,
            "std": float(values.std()) if len(values) else None,
        }
        beats[name] = float((critic[name] < values).mean()) if defined else None
    return {
        "requests": requests,
        "candidates": candidates,
        "random_draws": random_draws,
        "critic": critic,
        "likeliest": picked([int(np.argmax(lp)) for lp in logprobs]),
        "random": random_stats,
        "critic_beats_random": beats,
        "critic_pick": critic_pick,
        "critic_scores": [[float(x) for x in s] for s in critic_scores],
        "seconds": seconds,
        "silent_candidates": sum(_silent(c) for request in stats for c in request),
        "silent_references": sum(_silent(r) for r in reference_stats),
        "references": len(reference_stats),
    }


def _silent(stats: dict[str, float]) -> bool:
    """No statistic defined: the piece (or its opening) has no notes."""
    return all(np.isnan(v) for v in stats.values())


def undefined_reason(report: dict[str, Any]) -> str | None:
    """Why some statistics have no distance (a "-" in the table), or None when every one has."""
    if all(report["critic"][n] is not None for n in STAT_NAMES):
        return None
    total = report["requests"] * report["candidates"]
    reasons = []
    if report.get("silent_candidates"):
        reasons.append(
            f"{report['silent_candidates']} of the {total} candidates have no notes (an undertrained model "
            "or extreme sampling settings: look at `musenet-jax generate`'s output)"
        )
    if report.get("silent_references"):
        reasons.append(
            f"{report['silent_references']} of the split's {report['references']} pieces have no notes in "
            f"their first {report['seconds']:g} s (raise sample.seconds)"
        )
    reasons = reasons or ["no pick has a note of the kind they need (only drums, or too few notes)"]
    return "- = undefined: " + "; ".join(reasons)


def reranking_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table: one row per pick rule, one column per statistic."""

    def row(label: str, cells: list[str]) -> str:
        return f"| {label} | " + " | ".join(cells) + " |"

    def number(value: float | None, fmt: str = ".2f") -> str:
        return "-" if value is None else format(value, fmt)

    def spread(stat: dict[str, float | None]) -> str:
        return "-" if stat["mean"] is None else f"{stat['mean']:.2f} ± {stat['std']:.2f}"

    why = undefined_reason(report)
    return "\n".join(
        [
            row("pick", list(STAT_NAMES)),
            "| --- |" + " ---: |" * len(STAT_NAMES),
            row("critic", [number(report["critic"][n]) for n in STAT_NAMES]),
            row("likeliest (mean log-prob)", [number(report["likeliest"][n]) for n in STAT_NAMES]),
            row("random (mean ± std)", [spread(report["random"][n]) for n in STAT_NAMES]),
            row("critic beats random", [number(report["critic_beats_random"][n], ".0%") for n in STAT_NAMES]),
            *([f"\n{why}"] if why else []),
        ]
    )
