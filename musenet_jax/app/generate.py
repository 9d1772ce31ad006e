"""`generate`: N candidates from a loaded run, ranked by the inner critic, written out.

Writes `sample_K.mid`, its tokens as `sample_K.json` (for `musenet-jax decode`), `sample_K.png` (piano
roll) and, with FluidSynth, `sample_K.wav` per candidate, and `ranking.json`: candidates best first by
the critic's probability that they are real music (by mean log-probability when no critic has been
trained in the run's work directory); a candidate that added no notes is ranked last whatever its score,
and one whose melody drones on one pitch after the others (said in one line each).
Lengths, counts and creativity come from the run's `sample` section (the command line overrides it). The
files are written beside and moved in when all are written; an earlier generate's files (listed unchanged in
the folder's manifest, `outputs.py`) are replaced or removed, and a file of the user's where one would go is
refused in one line.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from etils import epath
from tqdm import tqdm

from musenet_jax.app.run import Run
from musenet_jax.data.note_facts import pairing_note
from musenet_jax.encoding.events import Events
from musenet_jax.encoding.timing import duration_steps
from musenet_jax.encoding.vocab import KIND_NOTE_ON, pitch_name
from musenet_jax.eval.form_stats import drone
from musenet_jax.outputs import naming, refuse_to_overwrite, remove_earlier, staged_into
from musenet_jax.render.audio import renderer
from musenet_jax.render.pianoroll import save_pianoroll
from musenet_jax.sample.budget import token_budget
from musenet_jax.sample.conditioning import make_request, parse_instruments
from musenet_jax.storage import is_url

# The names of `generate`'s files: an earlier generate's are removed when its manifest lists them unchanged.
OUTPUT_FILE = re.compile(r"^(sample_\d+\.(mid|json|png|wav)|ranking\.json)$")


def prepare_out_dir(out_dir: str | os.PathLike) -> epath.Path:
    """Creates `out_dir` (a folder or a bucket URL) and proves it writable, before any model is loaded or
    token sampled; an unwritable one raises the `OSError` (its path and errno), which the CLI prints as one
    line."""
    out = epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if is_url(out):
        check = out / ".write-check"
        check.write_text("")
        check.unlink()
    else:
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-check-"):
            pass
    return out


def output_names(num_samples: int, audio: bool) -> list[str]:
    """The files one `generate` writes: per candidate MIDI, tokens, piano roll (and WAV), then the ranking."""
    kinds = ("mid", "json", "png", "wav") if audio else ("mid", "json", "png")
    return [f"sample_{k}.{kind}" for k in range(num_samples) for kind in kinds] + ["ranking.json"]


def rank_candidates(entries: list[dict[str, Any]], *, by_critic: bool) -> list[dict[str, Any]]:
    """Best first by critic score (else mean log-probability); a candidate that added no notes goes last
    whatever its score (a critic can rate silence highly, and silence is never the best answer), and a
    drone (`eval/form_stats.py`) after the others: a line stuck on one pitch is very likely under the
    model, and likelihood alone ranks it first."""
    key = "critic_score" if by_critic else "mean_logprob"
    return sorted(entries, key=lambda e: (e["new_notes"] == 0, e.get("drone") is not None, -e[key]))


def drone_entry(events: Events) -> dict[str, Any] | None:
    """The `drone` field of a ranking entry: where the candidate's melody sits, or None."""
    found = drone(events)
    if found is None:
        return None
    pitch, top, repeats = found
    return {"pitch": pitch_name(pitch), "pitch_share": round(top, 3), "repeated_share": round(repeats, 3)}


def written_after(events: Events, seconds: float) -> Events:
    return events.select(events.start_s >= seconds - 1e-9)


def drone_warning(entry: dict[str, Any]) -> str:
    held = entry["drone"]
    return (
        f"warning: sample_{entry['sample']} drones on {held['pitch']} ({held['pitch_share']:.0%} of its "
        f"melody, {held['repeated_share']:.0%} of its steps repeat the last note): ranked after the others"
    )


def rare_pairing(run: Run, composer: str, families: Sequence[str]) -> str | None:
    """The line on a requested pairing the run's training data rarely or never shows (None if it is not
    one), saying whether the run's grammar rule 12 makes such parts play."""
    return pairing_note(run.note_facts, composer, families, parts_play=run.cfg.sample.part_rest_s > 0)


def say_rare_pairing(run: Run, composer: str, families: list[str], say: Callable[[str], None]) -> None:
    """Says `rare_pairing`'s line, if there is one."""
    rare = rare_pairing(run, composer, families)
    if rare:
        say(rare)


def critic_scores(run: Run, sequences: list[np.ndarray], say: Callable[[str], None]) -> np.ndarray | None:
    """The run's critic's P(real) of each sequence, or None without a critic (said in one line when the
    run's `sample.rank_by` asked to rank by it)."""
    critic = run.critic()
    if critic is None and run.cfg.sample.rank_by == "critic":
        say(
            f"no trained critic in {run.workdir} (run `musenet-jax critic train`); "
            "ranking by mean log-probability"
        )
    return None if critic is None else critic.score(sequences)


def generate(
    run: Run,
    out_dir: str | os.PathLike,
    *,
    composer: str,
    instruments: str,
    intro: str | os.PathLike | None = None,
    say: Callable[[str], None] = print,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """Samples, scores and writes the candidates; returns the ranking (best first) as written. A candidate
    that stopped short of the requested length is said in one line each."""
    sc, tokenizer = run.cfg.sample, run.tokenizer
    out = prepare_out_dir(out_dir)
    render, why_not = renderer()
    names = output_names(sc.num_samples, render is not None)
    refuse_to_overwrite(out, names, "--out")  # before any token is sampled
    request = make_request(
        tokenizer,
        composer,
        instruments,
        sc.seconds,
        intro,
        restrict=sc.restrict_instruments,
        piece_seconds=sc.piece_seconds,
    )
    budget = token_budget(sc.seconds, int(request.families.sum()), sc.max_new_tokens)
    say_rare_pairing(run, composer, parse_instruments(instruments), say)
    sampler = run.sampler()
    with tqdm(total=budget, unit="tok", desc="sampling", disable=not show_progress) as bar:

        def progress(steps: int, music_s: float) -> None:
            bar.update(steps)
            bar.set_postfix_str(f"{music_s:.1f}/{request.target_steps * tokenizer.step_s:.1f} s")

        candidates = sampler.sample(
            [request] * sc.num_samples, max_new_tokens=budget, seed=sc.seed, progress=progress
        )

    scores = critic_scores(run, [c.ids for c in candidates], say)
    if render is None:
        say(why_not)
    intro_s = duration_steps(request.prompt, tokenizer.vocab) * tokenizer.step_s
    entries = [
        {
            "sample": k,
            "midi": f"sample_{k}.mid",
            "critic_score": None if scores is None else float(scores[k]),
            "mean_logprob": cand.mean_logprob,
            "tokens": int(cand.sampled),
            "seconds": duration_steps(cand.ids, tokenizer.vocab) * tokenizer.step_s,
            "new_notes": int(
                (tokenizer.vocab.token_kinds[cand.ids[cand.prompt_length :]] == KIND_NOTE_ON).sum()
            ),
            "stopped_by": cand.stopped_by,
            "drone": drone_entry(written_after(tokenizer.ids_to_events(cand.ids), intro_s)),
        }
        for k, cand in enumerate(candidates)
    ]
    by_critic = scores is not None and sc.rank_by == "critic"
    ranking = rank_candidates(entries, by_critic=by_critic)
    ranked_by = "critic_score" if by_critic else "mean_logprob"
    # Written beside and moved in when all are written; a write that fails (a full disk) names `out`.
    with staged_into(out, "generate", "--out") as local, naming(out):
        for k, cand in enumerate(candidates):
            stem = f"sample_{k}"
            tokenizer.decode(cand.ids).dump(str(local / f"{stem}.mid"))
            (local / f"{stem}.json").write_text(
                json.dumps({"ids": cand.ids.tolist(), "prompt_length": cand.prompt_length})
            )
            title = f"{stem}: {composer}, {instruments}"
            save_pianoroll(tokenizer, cand.ids, local / f"{stem}.png", prompt_seconds=intro_s, title=title)
            if render is not None:
                render(tokenizer.ids_to_events(cand.ids), local / f"{stem}.wav")
        (local / "ranking.json").write_text(
            json.dumps({"ranked_by": ranked_by, "candidates": ranking}, indent=2) + "\n"
        )
    removed = remove_earlier(out, "generate", OUTPUT_FILE, keep=names)
    if removed:
        shown = ", ".join(removed[:6]) + (", ..." if len(removed) > 6 else "")
        say(f"removed {len(removed)} files of an earlier generate from {out}: {shown}")
    target_s = request.target_steps * tokenizer.step_s
    for entry in entries:
        if entry["new_notes"] == 0:
            say(
                f"warning: sample_{entry['sample']} added no notes ({entry['tokens']} tokens, none a "
                "note-on; the sampling settings may be extreme): ranked last"
            )
        elif entry["drone"] is not None:
            say(drone_warning(entry))
        elif entry["stopped_by"] == "budget":
            how = (
                "--max-new-tokens / sample.max_new_tokens"
                if sc.max_new_tokens
                else "derived from --seconds; set --max-new-tokens higher"
            )
            say(
                f"warning: sample_{entry['sample']} is {entry['seconds']:.1f} s of the {target_s:.1f} s "
                "asked for: "
                f"its token budget of {budget} ran out ({how})"
            )
    return ranking
