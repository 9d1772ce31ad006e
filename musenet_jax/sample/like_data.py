"""The model's own music under the conditions of real music: for each drawn real piece, a sample with its
composer, its instruments and its length (capped). The critic learns to tell these from the real
pieces, and evaluation compares their statistics with the test set's."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from musenet_jax.sample.conditioning import Request, request_like
from musenet_jax.sample.sampler import Candidate, Sampler

BATCH = 8  # sequences decoded together; short groups are filled up so the decoding loop compiles once


def sample_like_pieces(
    sampler: Sampler,
    pieces: Sequence[np.ndarray],
    num: int,
    *,
    max_seconds: float,
    max_new_tokens: int,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[Candidate]:
    """`num` samples, each conditioned like a randomly drawn piece of `pieces`; `progress(samples_done)`."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(pieces), size=num, replace=num > len(pieces))
    requests = [request_like(sampler.tokenizer, pieces[i], max_seconds) for i in chosen]
    by_length: dict[int, list[int]] = defaultdict(list)
    for index, request in enumerate(requests):
        by_length[len(request.prompt)].append(index)
    history = max(by_length) + max_new_tokens
    out: list[Candidate | None] = [None] * num
    batches = 0
    for length in sorted(by_length):
        indices = by_length[length]
        for start in range(0, len(indices), BATCH):
            group = indices[start : start + BATCH]
            batch: list[Request] = [requests[i] for i in group]
            batch += [batch[0]] * (BATCH - len(batch))
            batches += 1
            candidates = sampler.sample(
                batch, max_new_tokens=max_new_tokens, history=history, seed=seed + batches
            )
            for i, cand in zip(group, candidates):
                out[i] = cand
            if progress is not None:
                progress(len(group))
    return [c for c in out if c is not None]
