"""Sampling: creativity filters, the token grammar (every candidate re-encodes from its MIDI exactly),
conditioning errors, requested length, and `musenet-jax generate` end to end on a trained tiny run."""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from midi_corpus import export_corpus_scores

from musenet_jax.cli.main import main
from musenet_jax.config import load_config
from musenet_jax.encoding.timing import duration_steps
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.errors import UserError
from musenet_jax.model.transformer import MuseNet
from musenet_jax.render import audio
from musenet_jax.sample.conditioning import make_request, request_like
from musenet_jax.sample.config import SampleConfig
from musenet_jax.sample.filtering import draw, top_k_filter, top_p_filter
from musenet_jax.sample.grammar import GrammarState, GrammarTables, advance, allowed_tokens
from musenet_jax.sample.sampler import Sampler

TOKENIZER = Tokenizer()


def test_top_k_keeps_the_k_largest_logits():
    logits = jnp.array([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = np.isfinite(np.asarray(top_k_filter(logits, 2)))[0]
    assert kept.tolist() == [False, True, False, True, False]
    assert np.isfinite(np.asarray(top_k_filter(logits, 0))).all()  # 0 = off


@pytest.mark.parametrize("p,expected", [(0.5, 1), (0.7, 2), (0.8, 2), (0.81, 3), (0.96, 4), (1.0, 4)])
def test_top_p_keeps_the_smallest_nucleus_reaching_p(p, expected):
    probs = np.array([0.15, 0.5, 0.05, 0.3])  # sorted: 0.5, 0.3, 0.15, 0.05
    kept = np.isfinite(np.asarray(top_p_filter(jnp.log(jnp.asarray(probs))[None], p)))[0]
    assert kept.sum() == expected
    assert kept[np.argsort(-probs)[:expected]].all()


def test_draws_stay_inside_the_filtered_support_and_temperature_zero_is_greedy():
    logits = jnp.log(jnp.array([[0.15, 0.5, 0.05, 0.3]]))
    keys = jax.random.split(jax.random.key(0), 400)
    draws = jax.vmap(lambda k: draw(k, logits, SampleConfig(temperature=1.0, top_k=3, top_p=0.8)))(keys)
    assert set(np.asarray(draws).ravel().tolist()) == {
        1,
        3,
    }  # top-p 0.8 of the renormalized top 3 = the 2 likeliest
    assert int(draw(keys[0], logits, SampleConfig(temperature=0.0))[0]) == 1
    with pytest.raises(ValueError, match="sample.top_p"):
        SampleConfig(top_p=0.0)


def test_grammar_allows_note_offs_only_of_sounding_notes_and_keeps_the_step_order():
    vocab = TOKENIZER.vocab
    tables = GrammarTables.from_vocab(vocab)
    state = GrammarState.initial(1, tables)
    families = jnp.ones((1, len(vocab.families)), bool)
    c4_on, c4_off = vocab.id("piano:v2:C4"), vocab.id("piano:v0:C4")
    e4_on = vocab.id("piano:v2:E4")
    allowed = np.asarray(allowed_tokens(state, tables, families))[0]
    assert allowed[c4_on] and not allowed[c4_off] and allowed[vocab.end_id] and not allowed[vocab.start_id]
    state = advance(state, jnp.array([e4_on]), tables, jnp.array([True]))
    allowed = np.asarray(allowed_tokens(state, tables, families))[0]
    assert not allowed[c4_on]  # ascending ids within a step: C4 sorts before E4
    assert not allowed[vocab.id("piano:v0:E4")]  # a note lasts at least one step
    assert not allowed[vocab.end_id]  # E4 still sounds
    state = advance(state, jnp.array([vocab.wait_id(3)]), tables, jnp.array([True]))
    allowed = np.asarray(allowed_tokens(state, tables, families))[0]
    assert (
        allowed[vocab.id("piano:v0:E4")] and not allowed[vocab.id("piano:v1:E4")]
    )  # E4 sounds: off yes, on no
    assert not allowed[vocab.wait_id(5)]  # a short wait is never followed by another wait
    only_strings = jnp.zeros((1, len(vocab.families)), bool).at[0, vocab.families.index("strings")].set(True)
    allowed = np.asarray(allowed_tokens(state, tables, only_strings))[0]
    assert not allowed[c4_on] and allowed[vocab.id("strings:v2:C4")]


@pytest.fixture(scope="module")
def random_model():
    cfg = load_config("tiny", ["model.d_model=32", "model.context=64"])
    return MuseNet(cfg.model, TOKENIZER.vocab.size, rngs=nnx.Rngs(0))


def test_every_sampled_sequence_is_what_its_midi_file_encodes_to(random_model, tmp_path):
    """An untrained model draws wild sequences (drums, chords, long runs past the 64-token context);
    the grammar still makes each one exactly the tokenizer's encoding of its own MIDI file."""
    sampler = Sampler(random_model, TOKENIZER)
    request = make_request(TOKENIZER, "jazz", "piano,drums,bass", 60.0)
    candidates = sampler.sample([request] * 3, max_new_tokens=180, seed=1)
    assert len({c.ids.tobytes() for c in candidates}) == 3
    for k, cand in enumerate(candidates):
        assert cand.stopped_by in ("end", "budget") and cand.sampled > 64 and np.isfinite(cand.mean_logprob)
        path = tmp_path / f"{k}.mid"
        TOKENIZER.decode(cand.ids).dump(str(path))
        again = TOKENIZER.encode(path, composer="jazz")
        np.testing.assert_array_equal(
            again[TOKENIZER.prefix_length(again) :], cand.ids[request.prefix_length :]
        )
        families = set(TOKENIZER.ids_to_events(cand.ids).family.tolist())
        assert families <= {TOKENIZER.vocab.families.index(f) for f in ("piano", "drums", "bass")}


def test_sampling_stops_at_the_requested_length(random_model):
    sampler = Sampler(random_model, TOKENIZER, SampleConfig(top_k=300))
    request = make_request(TOKENIZER, "bach", "piano", 0.3)
    candidates = sampler.sample([request] * 2, max_new_tokens=150, seed=2)
    assert any(c.stopped_by == "length" for c in candidates)
    for cand in candidates:
        assert duration_steps(cand.ids, TOKENIZER.vocab) <= request.target_steps == 30


def test_a_request_that_may_not_end_is_never_ended_and_stays_open(random_model):
    """The co-composer's continuations: no `end` drawn (an untrained model draws it often, see above),
    and `open_ids` keep the sampled tokens as drawn, trailing rest included, to be continued later."""
    sampler = Sampler(random_model, TOKENIZER, SampleConfig(top_k=300))
    request = dataclasses.replace(make_request(TOKENIZER, "jazz", "piano,drums,bass", 0.3), may_end=False)
    candidates = sampler.sample([request] * 4, max_new_tokens=150, seed=1)
    end_id = TOKENIZER.vocab.end_id
    assert {c.stopped_by for c in candidates} <= {"length", "budget"}
    assert any(c.stopped_by == "length" for c in candidates)
    for cand in candidates:
        assert end_id not in cand.open_ids and cand.ids[-1] == end_id  # the file is still closed
        assert len(cand.open_ids) == cand.prompt_length + cand.sampled
        np.testing.assert_array_equal(cand.open_ids[: cand.prompt_length], request.prompt)
        if cand.stopped_by == "length":
            assert duration_steps(cand.open_ids, TOKENIZER.vocab) == request.target_steps


def test_the_opening_of_a_longer_piece_stops_early_but_counts_down_from_the_whole(random_model):
    """`piece_seconds` feeds the countdown: the model is told the piece goes on (no ending to write),
    while sampling still stops at the requested length."""
    sampler = Sampler(random_model, TOKENIZER, SampleConfig(top_k=300))
    opening = make_request(TOKENIZER, "bach", "piano", 0.3, piece_seconds=60.0)
    assert (opening.target_steps, opening.piece_steps) == (30, 6000)
    for cand in sampler.sample([opening] * 2, max_new_tokens=150, seed=2):
        assert duration_steps(cand.ids, TOKENIZER.vocab) <= 30
    whole = make_request(TOKENIZER, "bach", "piano", 0.3)
    assert whole.piece_steps == whole.target_steps == 30
    first_logits = [
        sampler._prefill(
            sampler.params, sampler._initial_state([r], 40, 0), head=len(r.prompt), body=0, cache_len=40
        ).logits
        for r in (opening, whole)
    ]
    assert not np.allclose(*first_logits)  # the countdown embedding sees the difference


def test_samples_like_a_real_piece_are_openings_of_a_piece_that_long():
    vocab = TOKENIZER.vocab
    note = vocab.note_ids(np.array([0]), np.array([3]), np.array([60]))[0]
    release = vocab.note_ids(np.array([0]), np.array([0]), np.array([60]))[0]
    body = [note, vocab.wait_id(100), release] * 20  # 20 s of one repeated note
    piece = np.concatenate([TOKENIZER.prefix("bach", np.array([0])), body, [vocab.end_id]])
    request = request_like(TOKENIZER, piece, max_seconds=5.0)
    assert (request.target_steps, request.piece_steps) == (500, 2000)

    with pytest.raises(UserError, match=r"unknown composer 'bahc'; valid: bach, "):
        make_request(TOKENIZER, "bahc", "piano", 5)
    with pytest.raises(UserError, match=r"unknown instrument 'pinao'; valid: piano, "):
        make_request(TOKENIZER, "bach", "pinao,strings", 5)


def test_wav_rendering_or_one_explanation():
    render, why_not = audio.renderer()
    if render is None:
        assert "apt-get install fluidsynth fluid-soundfont-gm" in why_not
        return
    events = TOKENIZER.ids_to_events(
        np.array([TOKENIZER.vocab.id("piano:v3:C4"), TOKENIZER.vocab.wait_id(50)])
    )
    import tempfile
    import wave

    with tempfile.TemporaryDirectory() as folder:
        render(events, f"{folder}/c4.wav")
        with wave.open(f"{folder}/c4.wav") as wav:
            assert (
                wav.getnchannels() == 2 and wav.getnframes() >= audio.SAMPLE_RATE * (0.5 + audio.TAIL_S) - 1
            )
            assert np.abs(np.frombuffer(wav.readframes(wav.getnframes()), np.int16)).max() > 0


@pytest.mark.slow
def test_generate_end_to_end_with_a_prompt_and_a_trained_critic(tiny_run, tmp_path, capsys):
    workdir = shutil.copytree(tiny_run, tmp_path / "run")  # it writes into the run
    intro = export_corpus_scores(tmp_path / "corpus", ("bach/bwv66.6",))[0]
    fakes = tmp_path / "fakes"
    assert (
        main(["critic", "make-fakes", "--checkpoint", str(workdir), "--num", "4", "--out", str(fakes)]) == 0
    )
    assert (
        main(
            [
                "critic",
                "train",
                "--checkpoint",
                str(workdir),
                "--fakes",
                str(fakes),
                "--set",
                "critic.steps=3",
                "--set",
                "critic.batch=4",
            ]
        )
        == 0
    )
    assert "held-out ROC AUC" in capsys.readouterr().out
    out = tmp_path / "out"
    code = main(
        [
            "generate",
            "--checkpoint",
            str(workdir),
            "--composer",
            "bach",
            "--instruments",
            "piano,strings",
            "--prompt",
            str(intro),
            "--seconds",
            "2",
            "--num-samples",
            "2",
            "--top-p",
            "0.95",
            "--max-new-tokens",
            "40",
            "--set",
            "sample.rank_by=critic",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    prompt_body = TOKENIZER.encode(intro)[TOKENIZER.prefix_length(TOKENIZER.encode(intro)) : -1]
    ranking = json.loads((out / "ranking.json").read_text())
    assert ranking["ranked_by"] == "critic_score"
    scores = [c["critic_score"] for c in ranking["candidates"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 2 and all(0 < s < 1 for s in scores)
    for k in range(2):
        saved = json.loads((out / f"sample_{k}.json").read_text())
        ids, prompt_length = np.array(saved["ids"]), saved["prompt_length"]
        prefix_length = prompt_length - len(prompt_body)
        np.testing.assert_array_equal(ids[prefix_length:prompt_length], prompt_body)  # the intro, untouched
        again = TOKENIZER.encode(out / f"sample_{k}.mid")
        body = again[TOKENIZER.prefix_length(again) :]
        np.testing.assert_array_equal(body[len(prompt_body) :], ids[prompt_length:])  # the continuation
        assert (out / f"sample_{k}.png").stat().st_size > 0
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(workdir),
                "--composer",
                "bahc",
                "--instruments",
                "piano",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "unknown composer 'bahc'; valid: bach" in capsys.readouterr().err


def test_a_piece_that_fits_the_context_gets_a_cache_of_its_history_and_the_same_samples(random_model):
    """The cache is sized to the piece (prompt + budget) when that is shorter than the context: the same
    seed draws the same tokens as with a whole-context cache, and the decode loop attends over fewer keys."""
    sampler = Sampler(random_model, TOKENIZER, SampleConfig(top_k=300))
    request = make_request(TOKENIZER, "bach", "piano", 1.0)
    history = len(request.prompt) + 40
    assert history < sampler.context
    short = sampler.sample([request] * 2, max_new_tokens=40, seed=5)
    whole_context = sampler.sample([request] * 2, max_new_tokens=40, seed=5, history=sampler.context)
    for a, b in zip(short, whole_context):
        np.testing.assert_array_equal(a.ids, b.ids)
    state = sampler._prefill(
        sampler.params,
        sampler._initial_state([request], history, 0),
        head=len(request.prompt),
        body=0,
        cache_len=history,
    )
    assert state.cache.k.shape[3] == history
