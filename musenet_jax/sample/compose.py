"""`generate` as a library call: N candidates from a checkpoint, ranked by the inner critic, written out.

Writes `sample_K.mid`, its tokens as `sample_K.json` (for `musenet-jax decode`), `sample_K.png` (piano roll) and, with FluidSynth, `sample_K.wav` per candidate,
and `ranking.json`: candidates best first by the critic's probability that they are real music (by
mean log-probability when no critic has been trained in the work directory).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from musenet_jax.encoding.timing import duration_steps
from musenet_jax.errors import UserError
from musenet_jax.sample.filtering import SamplingSettings


@dataclasses.dataclass(frozen=True)
class GenerateOptions:
    composer: str
    instruments: str
    intro: str | None = None
    seconds: float | None = None  # None: the config's sample.seconds
    num_samples: int | None = None  # None: sample.num_samples
    seed: int | None = None  # None: sample.seed
    temperature: float | None = None  # None: sample.temperature, and so on
    top_k: int | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None
    step: str = "latest"  # checkpoint step: a number, latest or best


def generate(
    workdir: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: GenerateOptions,
    *,
    say: Callable[[str], None] = print,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """Samples, scores and writes the candidates; returns the ranking (best first) as written."""
    from tqdm import tqdm

    from musenet_jax.critic.scoring import critic_logits, probability_real
    from musenet_jax.critic.store import load_critic
    from musenet_jax.sample.audio import renderer
    from musenet_jax.sample.conditioning import make_request
    from musenet_jax.sample.pianoroll import save_pianoroll
    from musenet_jax.sample.sampler import Sampler
    from musenet_jax.train.checkpoint import restore_for_inference

    cfg, model, tokenizer = restore_for_inference(workdir, options.step)
    sc = cfg.sample
    seconds = sc.seconds if options.seconds is None else options.seconds
    num = sc.num_samples if options.num_samples is None else options.num_samples
    if num < 1:
        raise UserError(f"--num-samples must be at least 1, got {num}")
    request = make_request(tokenizer, options.composer, options.instruments, seconds, options.intro,
                           restrict=sc.restrict_instruments)
    budget = sc.max_new_tokens if options.max_new_tokens is None else options.max_new_tokens
    if budget < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {budget}")
    settings = SamplingSettings.from_config(sc, temperature=options.temperature, top_k=options.top_k, top_p=options.top_p)
    sampler = Sampler(model, tokenizer, settings)
    with tqdm(total=budget, unit="tok", desc="sampling", disable=not show_progress) as bar:

        def progress(steps: int, music_s: float) -> None:
            bar.update(steps)
            bar.set_postfix_str(f"{music_s:.1f}/{request.target_steps * tokenizer.step_s:.1f} s")

        candidates = sampler.sample([request] * num, max_new_tokens=budget,
                                    seed=sc.seed if options.seed is None else options.seed, progress=progress)

    critic = load_critic(workdir, model, tokenizer.vocab.fingerprint())
    if critic is None:
        scores = None
        say(f"no trained critic in {workdir} (run `musenet-jax critic train`); ranking by mean log-probability")
    else:
        scores = probability_real(critic_logits(critic[0], tokenizer, [c.ids for c in candidates]))

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    render, why_not = renderer()
    if render is None:
        say(why_not)
    intro_s = duration_steps(request.prompt, tokenizer.vocab) * tokenizer.step_s
    entries = []
    for k, cand in enumerate(candidates):
        stem = f"sample_{k}"
        tokenizer.decode(cand.ids).dump(str(out / f"{stem}.mid"))
        (out / f"{stem}.json").write_text(json.dumps({"ids": cand.ids.tolist(), "prompt_length": cand.prompt_length}))
        save_pianoroll(tokenizer, cand.ids, out / f"{stem}.png", prompt_seconds=intro_s,
                       title=f"{stem}: {options.composer}, {options.instruments}")
        if render is not None:
            render(tokenizer.ids_to_events(cand.ids), out / f"{stem}.wav")
        entries.append({
            "sample": k,
            "midi": f"{stem}.mid",
            "critic_score": None if scores is None else float(scores[k]),
            "mean_logprob": cand.mean_logprob,
            "tokens": int(cand.sampled),
            "seconds": duration_steps(cand.ids, tokenizer.vocab) * tokenizer.step_s,
            "stopped_by": cand.stopped_by,
        })
    key = (lambda e: -e["critic_score"]) if scores is not None else (lambda e: -e["mean_logprob"])
    ranking = sorted(entries, key=key)
    (out / "ranking.json").write_text(json.dumps({"ranked_by": "critic_score" if scores is not None else
                                                  "mean_logprob", "candidates": ranking}, indent=2) + "\n")
    return ranking



def with_sample_overrides(cfg: Any, overrides: Sequence[str]) -> Any:
    """A checkpoint's config with `sample.key=value` overrides (other sections define the trained model)."""
    from musenet_jax.config import apply_overrides, config_from_dict, parse_override

    for text in overrides:
        if parse_override(text)[0] != "sample":
            raise UserError(f"--set {text}: only sample.* can change here; the other sections are the checkpoint's")
    return config_from_dict(apply_overrides(cfg.to_dict(), overrides), name=cfg.name)
