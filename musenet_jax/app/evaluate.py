"""`eval`: bits per token, per note and per second of music on a split (overall and per composer), and the
musical statistics of the model's samples next to the
split's (cut to the same length), with the distance between the two on each statistic."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm

from musenet_jax.app.run import Run
from musenet_jax.data.pieces import load_split_pieces
from musenet_jax.encoding.families import FAMILIES
from musenet_jax.errors import UserError
from musenet_jax.eval.music_rates import music_rates
from musenet_jax.eval.music_stats import distances, opening, piece_stats, stats_table, summary
from musenet_jax.eval.nll import score_pieces, token_report
from musenet_jax.sample.budget import token_budget
from musenet_jax.sample.like_data import sample_like_pieces


def evaluate(
    run: Run,
    *,
    split: str = "test",
    num_samples: int | None = None,
    max_pieces: int | None = None,
    seed: int = 0,
    show_progress: bool = True,
) -> dict[str, Any]:
    """The report as a JSON-able dict (keys: bits_per_token, bits_per_token_by_kind, bits_per_note,
    bits_per_second, by_composer, sample_stats, test_stats (the split's), stat_distance, ...).
    `num_samples` defaults to `sample.num_samples`; 0 skips sampling."""
    cfg, model, tokenizer = run.cfg, run.model, run.tokenizer
    num = cfg.sample.num_samples if num_samples is None else num_samples
    if num < 0:
        raise UserError(f"--num-samples must not be negative, got {num}")
    if max_pieces is not None and max_pieces < 1:
        raise UserError(f"--max-pieces must be at least 1, got {max_pieces}")
    pieces = load_split_pieces(cfg.data, cfg.encoding, split, max_pieces)
    report: dict[str, Any] = {"split": split, "pieces": len(pieces), "step": run.step}
    scores = score_pieces(model, tokenizer, pieces)
    report.update(token_report(scores))
    report.update(music_rates(tokenizer, pieces, scores.nats_by_piece, scores.tokens_by_piece))

    seconds = cfg.sample.seconds
    step_s = tokenizer.step_s

    test = stats_table([piece_stats(opening(tokenizer.ids_to_events(p), seconds), step_s) for p in pieces])
    report["test_stats"] = summary(test)
    report["num_samples"] = num
    if num:
        sampler = run.sampler()
        budget = token_budget(seconds, len(FAMILIES), cfg.sample.max_new_tokens)  # any instruments
        with tqdm(total=num, unit="piece", desc="samples", disable=not show_progress) as bar:
            samples = sample_like_pieces(
                sampler,
                pieces,
                num,
                max_seconds=seconds,
                max_new_tokens=budget,
                seed=seed,
                progress=bar.update,
            )
        generated = stats_table([piece_stats(tokenizer.ids_to_events(s.ids), step_s) for s in samples])
        report["sample_stats"] = summary(generated)
        report["stat_distance"] = distances(generated, test)
    else:
        report["sample_stats"], report["stat_distance"] = None, None
    return report
