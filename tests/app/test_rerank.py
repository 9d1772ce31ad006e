"""app/rerank.py on a real Run (a small random model with a critic head saved with Orbax) and real MIDI
pieces: the critic's pick is its best-scored candidate, the random picks have a spread, and the report
renders as a table."""

import numpy as np
import pytest
from flax import nnx
from midi_corpus import packaged_midi_files

from musenet_jax.app.rerank import measure_reranking, reranking_table
from musenet_jax.app.run import Run
from musenet_jax.config import load_config
from musenet_jax.critic.store import CriticMeta, save_critic
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.errors import UserError
from musenet_jax.eval.music_stats import STAT_NAMES
from musenet_jax.model.transformer import build_model

CFG = load_config("tiny", ["model.d_model=32", "model.context=64", "sample.seconds=2"])


@pytest.fixture(scope="module")
def run_and_pieces(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    tokenizer = Tokenizer(CFG.encoding)
    model = build_model(CFG.model, tokenizer.vocab, seed=0)
    head = {"critic": nnx.to_pure_dict(nnx.state(model, nnx.Param))["critic"]}
    save_critic(workdir, head, CriticMeta(False, 1, 0.5, 1, 1, 0, tokenizer.vocab.fingerprint()))
    pieces = [tokenizer.encode(p, composer="bach") for p in packaged_midi_files()[:4]]
    return Run(str(workdir), 0, CFG, model, tokenizer, note_facts=None), pieces


def test_the_critic_pick_is_its_best_scored_candidate_and_random_has_a_spread(run_and_pieces):
    run, pieces = run_and_pieces
    report = measure_reranking(run, pieces, requests=3, candidates=3, random_draws=50)
    assert report["critic_pick"] == [int(np.argmax(s)) for s in report["critic_scores"]]
    assert all(len(s) == 3 for s in report["critic_scores"]) and len(report["critic_scores"]) == 3
    for name in STAT_NAMES:
        if report["critic"][name] is None:
            continue
        assert report["random"][name]["std"] >= 0
        assert 0.0 <= report["critic_beats_random"][name] <= 1.0
    table = reranking_table(report)
    rows, _, reason = table.partition("\n\n")
    assert rows.count("\n") == 5 and "critic beats random" in rows
    undefined = any(report["critic"][name] is None for name in STAT_NAMES)
    assert reason.startswith("- = undefined: ") if undefined else reason == ""


def test_too_few_candidates_or_no_critic_is_one_line(run_and_pieces, tmp_path):
    run, pieces = run_and_pieces
    with pytest.raises(UserError, match="2 candidates"):
        measure_reranking(run, pieces, requests=2, candidates=1)
    bare = Run(str(tmp_path), 0, run.cfg, run.model, run.tokenizer, note_facts=None)
    with pytest.raises(UserError, match="no trained critic"):
        measure_reranking(bare, pieces, requests=2, candidates=2)
