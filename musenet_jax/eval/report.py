"""`musenet-jax eval`: bits per token on a split, and the musical statistics of the model's samples next
to the split's (cut to the same length), with the distance between the two on each statistic."""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def evaluate(
    workdir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    split: str = "test",
    num_samples: int | None = None,
    max_pieces: int | None = None,
    seed: int = 0,
    show_progress: bool = True,
) -> dict[str, Any]:
    """The report as a JSON-able dict (keys: bits_per_token, bits_per_token_by_kind, sample_stats,
    test_stats, stat_distance, ...)."""
    from tqdm import tqdm

    from musenet_jax.errors import UserError
    from musenet_jax.eval.music_stats import distances, piece_stats, stats_table, summary
    from musenet_jax.eval.nll import bits_per_token
    from musenet_jax.eval.pieces import load_split_pieces
    from musenet_jax.sample.filtering import SamplingSettings
    from musenet_jax.sample.like_data import sample_like_pieces
    from musenet_jax.sample.sampler import Sampler
    from musenet_jax.train.checkpoint import restore_for_inference

    cfg, model, tokenizer = restore_for_inference(workdir)
    num = cfg.sample.num_samples if num_samples is None else num_samples
    if num < 0:
        raise UserError(f"--num-samples must not be negative, got {num}")
    pieces = load_split_pieces(cfg, data_dir, split, max_pieces)
    report: dict[str, Any] = {"split": split, "pieces": len(pieces)}
    report.update(bits_per_token(model, tokenizer, pieces))

    seconds = cfg.sample.seconds
    step_s = tokenizer.step_s

    def cut(events):  # the test pieces' first `seconds`, as long as the samples may be
        kept = events.select(events.start_s < seconds)
        return kept.replace(end_s=np.minimum(kept.end_s, seconds))

    test = stats_table([piece_stats(cut(tokenizer.ids_to_events(p)), step_s) for p in pieces])
    report["test_stats"] = summary(test)
    report["num_samples"] = num
    if num:
        sampler = Sampler(model, tokenizer, SamplingSettings.from_config(cfg.sample))
        with tqdm(total=num, unit="piece", desc="samples", disable=not show_progress) as bar:
            samples = sample_like_pieces(sampler, pieces, num, max_seconds=seconds,
                                         max_new_tokens=cfg.sample.max_new_tokens, seed=seed, progress=bar.update)
        generated = stats_table([piece_stats(tokenizer.ids_to_events(s.ids), step_s) for s in samples])
        report["sample_stats"] = summary(generated)
        report["stat_distance"] = distances(generated, test)
    else:
        report["sample_stats"], report["stat_distance"] = None, None
    return report


def format_table(report: dict[str, Any]) -> str:
    """A short human-readable table of the report."""
    lines = [f"{report['split']}: {report['pieces']} pieces, {report['tokens']} tokens, "
             f"{report['bits_per_token']:.4f} bits/token"]
    by_kind = report["bits_per_token_by_kind"]
    lines.append("  by kind: " + ", ".join(
        f"{k} {v:.3f} ({report['tokens_by_kind'][k]})" for k, v in by_kind.items() if v is not None))
    lines.append(f"{'statistic':<22}{'samples':>16}{'test':>16}{'distance':>10}")
    for name, test in report["test_stats"].items():
        sample = (report["sample_stats"] or {}).get(name) or {}
        distance = (report["stat_distance"] or {}).get(name)
        lines.append(f"{name:<22}{_mean_std(sample):>16}{_mean_std(test):>16}"
                     f"{'' if distance is None else f'{distance:.3f}':>10}")
    return "\n".join(lines)


def _mean_std(entry: dict[str, Any]) -> str:
    if not entry or entry.get("mean") is None:
        return "-"
    return f"{entry['mean']:.3f}±{entry['std']:.3f}"
