"""`eval`: bits per token, per note and per second of music on a split (overall and per composer), and the
musical statistics of the model's samples next to the
split's (cut to the same length), with the distance between the two on each statistic; the gate of form
and honesty statistics, pooled and per composer (`eval/gates.py`), and with `controls` the same gate for
real pieces of another held-out split and for controls made from them (`eval/controls.py`)."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm

from musenet_jax.app.run import Run
from musenet_jax.data.pieces import load_split_pieces
from musenet_jax.encoding.families import FAMILIES
from musenet_jax.errors import UserError
from musenet_jax.eval.gate_sets import composer_label, gate_section
from musenet_jax.eval.infill_spans import infill_span_scores
from musenet_jax.eval.music_rates import music_rates
from musenet_jax.eval.music_stats import distances, opening, piece_stats, stats_table, summary
from musenet_jax.eval.nll import score_pieces, token_report
from musenet_jax.model.config import ModelConfig
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
    composer: str | None = None,
    controls: bool = False,
    position_bucket: int | None = None,
    window: int | None = None,
) -> dict[str, Any]:
    """The report as a JSON-able dict (keys: bits_per_token, bits_per_token_by_kind, bits_per_note,
    bits_per_second, by_composer, sample_stats, test_stats (the split's), stat_distance, gate, ...).
    `num_samples` defaults to `sample.num_samples`; 0 skips sampling. `composer`: only the split's pieces
    of that composer (scored, and the requests samples are conditioned like). `controls`: real pieces of
    the other held-out split (validation for test, else test) and controls made from them through the
    gate too. `position_bucket`: positions of the context window per row of bits/token by position
    (default: the context in 8). `window`: score with windows of this many tokens instead of the context
    (the same tokens with less of the past in view: what the far context is worth)."""
    cfg, model, tokenizer = run.cfg, run.model, run.tokenizer
    num = cfg.sample.num_samples if num_samples is None else num_samples
    if num < 0:
        raise UserError(f"--num-samples must not be negative, got {num}")
    if max_pieces is not None and max_pieces < 1:
        raise UserError(f"--max-pieces must be at least 1, got {max_pieces}")
    if window is not None and not ModelConfig.MIN_CONTEXT <= window <= model.cfg.context:
        raise UserError(
            f"--window must be {ModelConfig.MIN_CONTEXT} to the model's context ({model.cfg.context}), "
            f"got {window}"
        )
    if position_bucket is not None and not 1 <= position_bucket <= (window or model.cfg.context):
        raise UserError(
            f"--position-bucket must be 1 to the model's context ({model.cfg.context}), got {position_bucket}"
        )
    pieces = _of_composer(
        tokenizer,
        load_split_pieces(cfg.data, cfg.encoding, split, None if composer else max_pieces),
        composer,
        split,
    )[:max_pieces]
    report: dict[str, Any] = {"split": split, "pieces": len(pieces), "step": run.step, "composer": composer}
    report["window"] = window or model.cfg.context
    scores = score_pieces(model, tokenizer, pieces, window)
    report.update(token_report(scores, position_bucket))
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
        samples = []
        report["sample_stats"], report["stat_distance"] = None, None
    heldout = None
    if controls:
        other = "test" if split == "validation" else "validation"
        heldout = _of_composer(
            tokenizer,
            load_split_pieces(cfg.data, cfg.encoding, other, None if composer else max_pieces),
            composer,
            other,
        )[:max_pieces]
        report["controls_split"] = other
    report["gate"] = gate_section(
        tokenizer, pieces, seconds, samples=[s.ids for s in samples], heldout=heldout, seed=seed
    )
    return report


def _of_composer(tokenizer, pieces: list, composer: str | None, split: str) -> list:
    """The pieces of `composer` (all of them for None); a composer with none there is a one-line error."""
    if composer is None:
        return pieces
    mine = [p for p in pieces if composer_label(tokenizer, p) == composer]
    if not mine:
        found = sorted({composer_label(tokenizer, p) for p in pieces})
        raise UserError(f"split {split!r} has no pieces of composer {composer!r}; it has: {', '.join(found)}")
    return mine


def evaluate_infill_spans(
    run: Run, *, seconds: float, split: str = "test", max_pieces: int | None = None, seed: int = 0
) -> dict[str, Any]:
    """`eval --infill-spans`: bits/token inside one span per piece of the split, with the future given
    and left to right (see `eval/infill_spans.py`)."""
    if max_pieces is not None and max_pieces < 1:
        raise UserError(f"--max-pieces must be at least 1, got {max_pieces}")
    pieces = load_split_pieces(run.cfg.data, run.cfg.encoding, split, max_pieces)
    report = infill_span_scores(run.model, run.tokenizer, pieces, seconds=seconds, seed=seed)
    return {"split": split, "pieces": len(pieces), "step": run.step, **report}
