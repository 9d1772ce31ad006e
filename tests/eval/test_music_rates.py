"""eval/music_rates.py: bits per note and per second of music, overall and per composer, checked against a
hand computation on two short pieces whose notes and lengths are known."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from musenet_jax.config import load_config
from musenet_jax.encoding.timing import duration_steps, token_times
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.eval.music_rates import music_rates
from musenet_jax.eval.nll import score_pieces
from musenet_jax.model.loss import token_nll
from musenet_jax.model.transformer import MuseNet

TOKENIZER = Tokenizer()
VOCAB = TOKENIZER.vocab


def piece(composer: str, body: list[str]) -> np.ndarray:
    tokens = [f"composer:{composer}", "instrument:piano", "start", *body, "end"]
    return np.array([VOCAB.id(t) for t in tokens], np.int32)


# bach: 2 notes over 0.5 + 1.0 s; mozart: 3 notes (a chord) held 0.4 s, then 0.25 s of silence.
BACH = piece("bach", ["piano:v3:C4", "wait:50", "piano:v0:C4", "piano:v2:E4", "wait:100", "piano:v0:E4"])
MOZART = piece(
    "mozart",
    ["piano:v3:C4", "piano:v3:E4", "piano:v3:G4", "wait:40"]
    + ["piano:v0:C4", "piano:v0:E4", "piano:v0:G4", "wait:25"],
)


@pytest.fixture(scope="module")
def model():
    cfg = load_config("tiny", ["model.d_model=32", "model.context=64"])
    return MuseNet(cfg.model, VOCAB.size, rngs=nnx.Rngs(0), time_step_ms=cfg.encoding.time_step_ms)


def forward_bits(model, ids: np.ndarray) -> float:
    """All of a short piece's tokens after the first, scored in one forward pass, in bits."""
    logits = model(
        jnp.asarray(ids[None, :-1]),
        jnp.asarray(token_times(ids, VOCAB)[None, :-1]),
        jnp.asarray([duration_steps(ids, VOCAB)]),
    )
    return float(np.asarray(token_nll(logits, jnp.asarray(ids[None, 1:])), np.float64).sum() / math.log(2))


def test_bits_per_note_and_second_match_a_hand_computation(model):
    bach, mozart = forward_bits(model, BACH), forward_bits(model, MOZART)
    scores = score_pieces(model, TOKENIZER, [BACH, MOZART, BACH])
    rates = music_rates(TOKENIZER, [BACH, MOZART, BACH], scores.nats_by_piece, scores.tokens_by_piece)
    total = 2 * bach + mozart
    assert rates["notes"] == 2 + 3 + 2
    assert rates["seconds"] == pytest.approx(1.5 + 0.65 + 1.5)
    assert rates["bits_per_note"] == pytest.approx(total / 7, rel=1e-5)
    assert rates["bits_per_second"] == pytest.approx(total / 3.65, rel=1e-5)
    by = rates["by_composer"]
    assert set(by) == {"bach", "mozart"}
    assert by["bach"]["pieces"] == 2 and by["bach"]["notes"] == 4
    assert by["bach"]["seconds"] == pytest.approx(3.0)
    assert by["bach"]["bits_per_note"] == pytest.approx(bach / 2, rel=1e-5)
    assert by["bach"]["bits_per_second"] == pytest.approx(bach / 1.5, rel=1e-5)
    assert by["bach"]["bits_per_token"] == pytest.approx(bach / (len(BACH) - 1), rel=1e-5)
    assert by["mozart"]["bits_per_note"] == pytest.approx(mozart / 3, rel=1e-5)
    assert by["mozart"]["bits_per_second"] == pytest.approx(mozart / 0.65, rel=1e-5)


def test_a_piece_without_notes_or_time_gives_no_rate_rather_than_a_division_by_zero():
    empty = piece("bach", [])
    rates = music_rates(TOKENIZER, [empty], np.array([3.0]), np.array([3]))
    assert rates["notes"] == 0 and rates["bits_per_note"] is None and rates["bits_per_second"] is None
    assert rates["by_composer"]["bach"]["bits_per_token"] == pytest.approx(1 / math.log(2))
