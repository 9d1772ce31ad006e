"""`generate --infill` / `--accompany`: N candidates that fill a span of a piece or add parts to it.

Needs a run trained with anticipation (`encoding.anticipation_s` > 0). Writes what `generate` writes:
`sample_K.mid` (the given file's notes copied as they are plus one track per family of new notes, named
`infill: piano`, `accompany: drums`), `sample_K.json` (the tokens of the whole result), `sample_K.png`
(given notes pale, new notes in full colour), `sample_K.wav` with FluidSynth, and `ranking.json`, best
first by the critic (by mean log-probability without one). For a span, `ranking.json` also holds the span's
statistics (`eval/span_stats.py`) for the notes it replaced and for each candidate's fill.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm import tqdm

from musenet_jax.app.generate import (
    OUTPUT_FILE,
    critic_scores,
    drone_entry,
    drone_warning,
    output_names,
    prepare_out_dir,
    rank_candidates,
    say_rare_pairing,
)
from musenet_jax.app.run import Run
from musenet_jax.encoding.anticipation import require_anticipation
from musenet_jax.encoding.events import Events
from musenet_jax.encoding.families import FAMILIES
from musenet_jax.eval.span_stats import in_span, span_stats, span_summary
from musenet_jax.outputs import naming, refuse_to_overwrite, remove_earlier, staged_into
from musenet_jax.render.audio import renderer
from musenet_jax.render.pianoroll import save_given_and_new
from musenet_jax.sample.budget import token_budget
from musenet_jax.sample.conditioning import Request, parse_instruments
from musenet_jax.sample.infill import (
    Given,
    anticipated_request,
    bar_span,
    fim_request,
    given_and_new,
    given_for_accompaniment,
    given_for_infill,
    new_notes,
    read_piece,
    with_new_notes,
)


def infill(
    run: Run,
    out_dir: str | os.PathLike,
    *,
    piece: str | os.PathLike,
    composer: str,
    span_s: tuple[float, float] | None = None,
    span_bars: tuple[float, float] | None = None,
    instruments: str | None = None,
    say: Callable[[str], None] = print,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """Refills the notes of `piece` that start in a span (seconds, or bars by the file's tempo map) with
    the piece's families (and `instruments`, if given); returns the ranking as written."""
    tokenizer = run.tokenizer
    require_anticipation(tokenizer.vocab)
    out = prepare_out_dir(out_dir)
    midi = read_piece(piece)
    start_s, end_s = span_s if span_s is not None else bar_span(midi, *span_bars, piece)
    given = given_for_infill(tokenizer, midi, start_s, end_s, piece)
    families = sorted(
        {FAMILIES[f] for f in np.unique(tokenizer.midi_to_events(midi).family)}
        | set(parse_instruments(instruments) if instruments else ()),
        key=FAMILIES.index,
    )
    if tokenizer.vocab.fills_in_middle:
        request = fim_request(tokenizer, composer, given, families, run.cfg.model.context)
    else:
        request = anticipated_request(tokenizer, composer, given, families, families)
    say_rare_pairing(run, composer, [FAMILIES[f] for f in np.flatnonzero(request.owed)], say)
    return _sample_and_write(
        run,
        out,
        request,
        given,
        composer,
        label="infill",
        marks=(start_s, end_s),
        removed=in_span(tokenizer.midi_to_events(midi), given.start_step, given.stop_step, tokenizer.step_s),
        say=say,
        show_progress=show_progress,
    )


def accompany(
    run: Run,
    out_dir: str | os.PathLike,
    *,
    piece: str | os.PathLike,
    composer: str,
    instruments: str,
    say: Callable[[str], None] = print,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """Adds parts of the `instruments` families to the whole of `piece`; returns the ranking as written."""
    tokenizer = run.tokenizer
    require_anticipation(tokenizer.vocab)
    out = prepare_out_dir(out_dir)
    given, new = given_for_accompaniment(tokenizer, read_piece(piece), instruments, piece)
    present = [FAMILIES[f] for f in np.unique(given.events.family)]
    families = sorted({*present, *new}, key=FAMILIES.index)
    request = anticipated_request(tokenizer, composer, given, families, new)
    say_rare_pairing(run, composer, new, say)
    return _sample_and_write(
        run, out, request, given, composer, label="accompany", marks=(), say=say, show_progress=show_progress
    )


def _sample_and_write(
    run: Run,
    out: Any,
    request: Request,
    given: Given,
    composer: str,
    *,
    label: str,
    marks: tuple[float, ...],
    say: Callable[[str], None],
    show_progress: bool,
    removed: Events | None = None,
) -> list[dict[str, Any]]:
    sc, tokenizer = run.cfg.sample, run.tokenizer
    render, why_not = renderer()
    names = output_names(sc.num_samples, render is not None)
    refuse_to_overwrite(out, names, "--out")  # before any token is sampled
    seconds = (given.stop_step - given.start_step) * tokenizer.step_s
    budget = token_budget(seconds, int(request.families.sum()), sc.max_new_tokens) + len(request.forced)
    with tqdm(total=budget, unit="tok", desc=label, disable=not show_progress) as bar:
        candidates = run.sampler().sample(
            [request] * sc.num_samples,
            max_new_tokens=budget,
            seed=sc.seed,
            progress=lambda steps, _music_s: bar.update(steps),
        )
    news = [new_notes(tokenizer, cand.ids, given.start_step) for cand in candidates]
    wholes = [given_and_new(given.events, new) for new in news]
    plain = [tokenizer.events_to_ids(whole, composer) for whole in wholes]
    scores = critic_scores(run, plain, say)
    if render is None:
        say(why_not)
    entries = [
        {
            "sample": k,
            "midi": f"sample_{k}.mid",
            "critic_score": None if scores is None else float(scores[k]),
            "mean_logprob": cand.mean_logprob,
            "tokens": int(cand.sampled),
            "new_notes": len(news[k]),
            "stopped_by": cand.stopped_by,
            "drone": drone_entry(news[k]),
        }
        for k, cand in enumerate(candidates)
    ]
    span = None
    if removed is not None:  # a span: each fill's statistics next to those of the notes it replaced
        step = tokenizer.step_s
        original = span_stats(removed, given.events, step)
        fills = [
            span_stats(in_span(new, given.start_step, given.stop_step, step), given.events, step)
            for new in news
        ]
        for entry, fill in zip(entries, fills):
            entry["span_stats"] = fill
        span = {
            "start_s": given.start_step * step,
            "end_s": given.stop_step * step,
            "original_notes": len(removed),
            "original": original,
            "summary": span_summary(original, fills),
        }
        say(_span_line(span, fills))
    by_critic = scores is not None and sc.rank_by == "critic"
    ranking = rank_candidates(entries, by_critic=by_critic)
    with staged_into(out, "generate", "--out") as local, naming(out):
        for k in range(len(candidates)):
            stem = f"sample_{k}"
            with_new_notes(given.midi, news[k], label).dump(str(local / f"{stem}.mid"))
            (local / f"{stem}.json").write_text(json.dumps({"ids": plain[k].tolist(), "prompt_length": 0}))
            save_given_and_new(
                given.events, news[k], local / f"{stem}.png", marks=marks, title=f"{stem}: {label}"
            )
            if render is not None:
                render(wholes[k], local / f"{stem}.wav")
        (local / "ranking.json").write_text(
            json.dumps(
                {
                    "ranked_by": "critic_score" if by_critic else "mean_logprob",
                    **({"span": span} if span is not None else {}),
                    "candidates": ranking,
                },
                indent=2,
            )
            + "\n"
        )
    removed = remove_earlier(out, "generate", OUTPUT_FILE, keep=names)
    if removed:
        say(f"removed {len(removed)} files of an earlier generate from {out}")
    for entry in entries:
        if entry["drone"] is not None:
            say(drone_warning(entry))
        if entry["stopped_by"] == "budget":
            say(f"warning: sample_{entry['sample']} ran out of its token budget of {budget} before the end")
    return ranking


def _span_line(span: dict[str, Any], fills: list[dict[str, float]]) -> str:
    """One line: the span, its original notes, and how far the fills are from them on a few statistics."""
    summary = span["summary"]
    shown = ("note_density", "pitch_range", "shared_pitch_4")
    parts = []
    for name in shown:
        row = summary[name]
        if row["original"] is not None and row["fills_mean"] is not None:
            parts.append(f"{name} {row['original']:.2f} -> {row['fills_mean']:.2f}")
    return (
        f"span {span['start_s']:.1f}-{span['end_s']:.1f} s: {span['original_notes']} notes replaced, "
        f"{len(fills)} fills; original -> fills' mean: {', '.join(parts) or 'no statistic defined'} "
        "(all statistics in ranking.json)"
    )
