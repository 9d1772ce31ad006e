"""`generate`: N candidates from a loaded run, ranked by the inner critic, written out.

Writes `sample_K.mid`, its tokens as `sample_K.json` (for `musenet-jax decode`), `sample_K.png` (piano
roll) and, with FluidSynth, `sample_K.wav` per candidate, and `ranking.json`: candidates best first by
the critic's probability that they are real music (by mean log-probability when no critic has been
trained in the run's work directory). Lengths, counts and creativity come from the run's `sample`
section (the command line overrides it).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from typing import Any

from etils import epath
from tqdm import tqdm

from musenet_jax.app.run import Run
from musenet_jax.encoding.timing import duration_steps
from musenet_jax.sample.audio import renderer
from musenet_jax.sample.budget import token_budget
from musenet_jax.sample.conditioning import make_request
from musenet_jax.sample.pianoroll import save_pianoroll
from musenet_jax.storage import is_url, local_folder_for

# Files an earlier `generate` wrote into an output folder (and only those: other files are left alone).
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


def clear_earlier_output(out: epath.Path) -> list[str]:
    """Removes the sample files and ranking of an earlier run in `out`, so that what is there after this
    run is exactly what its ranking.json describes; returns the names removed."""
    if not out.is_dir():  # a bucket prefix with no objects under it is no folder yet
        return []
    removed = sorted(p.name for p in out.iterdir() if p.is_file() and OUTPUT_FILE.match(p.name))
    for name in removed:
        (out / name).unlink()
    return removed


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
    sampler = run.sampler()
    with tqdm(total=budget, unit="tok", desc="sampling", disable=not show_progress) as bar:

        def progress(steps: int, music_s: float) -> None:
            bar.update(steps)
            bar.set_postfix_str(f"{music_s:.1f}/{request.target_steps * tokenizer.step_s:.1f} s")

        candidates = sampler.sample(
            [request] * sc.num_samples, max_new_tokens=budget, seed=sc.seed, progress=progress
        )

    critic = run.critic()
    if critic is None:
        scores = None
        say(
            f"no trained critic in {run.workdir} (run `musenet-jax critic train`); "
            "ranking by mean log-probability"
        )
    else:
        scores = critic.score([c.ids for c in candidates])

    removed = clear_earlier_output(out)
    if removed:
        shown = ", ".join(removed[:6]) + (", ..." if len(removed) > 6 else "")
        say(f"removed {len(removed)} files of an earlier generate from {out}: {shown}")
    render, why_not = renderer()
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
            "stopped_by": cand.stopped_by,
        }
        for k, cand in enumerate(candidates)
    ]
    key = (lambda e: -e["critic_score"]) if scores is not None else (lambda e: -e["mean_logprob"])
    ranking = sorted(entries, key=key)
    ranked_by = "critic_score" if scores is not None else "mean_logprob"
    with local_folder_for(out_dir) as local:  # a bucket gets the files when all are written
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
    target_s = request.target_steps * tokenizer.step_s
    for entry in entries:
        if entry["stopped_by"] == "budget":
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
