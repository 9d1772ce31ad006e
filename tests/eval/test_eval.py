"""`musenet-jax eval`: bits per token over whole pieces (each token scored once), musical statistics on
pieces whose answers are known, and the command end to end on a trained tiny run."""

import json
import math
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from musenet_jax.cli.main import main
from musenet_jax.config import load_config
from musenet_jax.data.windows import piece_windows
from musenet_jax.encoding.events import Events
from musenet_jax.encoding.families import FAMILIES
from musenet_jax.encoding.timing import duration_steps, token_times
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.eval.music_stats import distances, piece_stats, stats_table
from musenet_jax.eval.nll import bits_per_token, score_pieces, token_report
from musenet_jax.model.loss import token_nll
from musenet_jax.model.transformer import MuseNet

TOKENIZER = Tokenizer()
PIANO = FAMILIES.index("piano")


def random_piece(length: int, seed: int) -> np.ndarray:
    """A prefix, then random note-on / wait tokens (the model need not like them), then `end`."""
    vocab = TOKENIZER.vocab
    rng = np.random.default_rng(seed)
    body = rng.choice(
        [vocab.id("piano:v3:C4"), vocab.id("piano:v2:E4"), vocab.wait_id(4), vocab.wait_id(12)], length - 4
    )
    return np.array(
        [vocab.composer_id("bach"), vocab.instrument_id("piano"), vocab.start_id, *body, vocab.end_id],
        np.int32,
    )


@pytest.fixture(scope="module")
def model():
    cfg = load_config("tiny", ["model.d_model=32", "model.context=64"])
    return MuseNet(cfg.model, TOKENIZER.vocab.size, rngs=nnx.Rngs(0), time_step_ms=cfg.encoding.time_step_ms)


def test_bits_per_token_of_a_short_piece_is_its_full_forward_nll(model):
    piece = random_piece(40, seed=0)
    times = token_times(piece, TOKENIZER.vocab)
    logits = model(
        jnp.asarray(piece[None, :-1]),
        jnp.asarray(times[None, :-1]),
        jnp.asarray([duration_steps(piece, TOKENIZER.vocab)]),
    )
    expected = np.asarray(token_nll(logits, jnp.asarray(piece[None, 1:])))[0].mean() / math.log(2)
    report = bits_per_token(model, TOKENIZER, [piece])
    assert report["tokens"] == len(piece) - 1
    assert report["bits_per_token"] == pytest.approx(expected, rel=1e-5)


def test_long_pieces_score_every_token_once_and_kinds_add_up(model):
    pieces = [random_piece(n, seed=n) for n in (30, 150, 300)]  # two longer than the 64-token context
    for piece in pieces:
        windows = piece_windows(TOKENIZER, piece, 64)
        assert windows["scored"].sum() == len(piece) - 1
        assert (windows["inputs"][:, :3] == piece[:3]).all()  # every window opens with the prefix
    report = bits_per_token(model, TOKENIZER, pieces)
    assert report["tokens"] == sum(len(p) - 1 for p in pieces) == sum(report["tokens_by_kind"].values())
    weighted = sum(report["bits_per_token_by_kind"][k] * n for k, n in report["tokens_by_kind"].items() if n)
    assert weighted / report["tokens"] == pytest.approx(report["bits_per_token"], rel=1e-6)
    assert report["tokens_by_kind"]["end"] == 3 and report["tokens_by_kind"]["prefix"] == 2 * 3


def test_bits_by_window_position_add_up_and_short_pieces_fill_only_the_first_positions(model):
    pieces = [random_piece(n, seed=n) for n in (30, 150, 300)]
    scores = score_pieces(model, TOKENIZER, pieces)
    report = token_report(scores, position_bucket=16)
    rows = report["bits_per_token_by_position"]
    assert [(r["first"], r["last"]) for r in rows] == [(0, 15), (16, 31), (32, 47), (48, 63)]
    assert sum(r["tokens"] for r in rows) == report["tokens"]
    weighted = sum(r["bits_per_token"] * r["tokens"] for r in rows)
    assert weighted / report["tokens"] == pytest.approx(report["bits_per_token"], rel=1e-6)
    short = token_report(score_pieces(model, TOKENIZER, pieces[:1]), position_bucket=16)
    counts = [r["tokens"] for r in short["bits_per_token_by_position"]]
    assert counts == [16, 13, 0, 0]  # 29 targets at positions 0-28
    assert short["bits_per_token_by_position"][3]["bits_per_token"] is None
    default = token_report(scores)["bits_per_token_by_position"]  # the 64-token context in 8
    assert len(default) == 8 and default[-1] == {**default[-1], "first": 56, "last": 63}


def test_a_shorter_window_scores_the_same_tokens_with_less_of_the_past(model):
    """`window` cuts the view, not the tokens: every target is scored once either way, a 300-token piece
    fills every position of a 32-token window, and the scores differ (less of the past in view)."""
    pieces = [random_piece(n, seed=n) for n in (30, 300)]
    whole = score_pieces(model, TOKENIZER, pieces)
    cut = score_pieces(model, TOKENIZER, pieces, window=32)
    assert cut.tokens_by_kind.sum() == whole.tokens_by_kind.sum()
    assert len(cut.tokens_by_position) == 32 and cut.tokens_by_position.min() > 0
    assert not np.isclose(cut.nats_by_kind.sum(), whole.nats_by_kind.sum())


def test_statistics_of_a_c_major_triad_then_silence():
    # C4 E4 G4 together for 1 s, then nothing until one short G4 at 3 s (0.1 s long).
    events = Events.from_columns([0, 0, 0, 3.0], [1, 1, 1, 3.1], [PIANO] * 4, [60, 64, 67, 67], [80] * 4)
    stats = piece_stats(events, step_s=0.01)
    assert stats["scale_consistency"] == 1.0
    assert stats["pitch_class_entropy"] == pytest.approx(-(0.25 * math.log2(0.25) * 2 + 0.5 * math.log2(0.5)))
    assert stats["pitch_range"] == 7
    assert stats["polyphony"] == pytest.approx((3 * 100 + 10) / 110)
    assert stats["empty_time_rate"] == pytest.approx(200 / 310)
    assert stats["note_density"] == pytest.approx(4 / 3.1)


def test_distance_is_zero_for_the_same_pieces_and_grows_with_the_shift():
    def triads(offset_s):
        return [
            piece_stats(
                Events.from_columns(
                    [0, 0, 0], [1 + offset_s + k, 1, 1], [PIANO] * 3, [60, 64, 67 + k], [80] * 3
                ),
                0.01,
            )
            for k in range(4)
        ]

    same = distances(stats_table(triads(0)), stats_table(triads(0)))
    assert all(v == 0 for v in same.values() if v is not None)
    near = distances(stats_table(triads(0.5)), stats_table(triads(0)))
    far = distances(stats_table(triads(2.0)), stats_table(triads(0)))
    assert 0 < near["note_density"] < far["note_density"]


@pytest.mark.slow
def test_eval_end_to_end_on_a_trained_tiny_run(tiny_run, music21_data_dir, tmp_path, capsys):
    workdir = shutil.copytree(tiny_run, tmp_path / "run")  # it writes into the run
    code = main(
        [
            "eval",
            "--checkpoint",
            str(workdir),
            "--data-dir",
            str(music21_data_dir),
            "--split",
            "train",
            "--max-pieces",
            "3",
            "--num-samples",
            "2",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert {"bits_per_token", "bits_per_token_by_kind", "sample_stats", "test_stats", "stat_distance"} <= set(
        report
    )
    assert report["pieces"] == 3 and report["num_samples"] == 2
    assert 0 < report["bits_per_token"] < math.log2(TOKENIZER.vocab.size) + 2  # 3 steps: near uniform, finite
    assert report["sample_stats"]["note_density"]["n"] > 0
    gate = report["gate"]
    assert set(gate["samples"]["distance"]) >= {"recurring_pitch_6", "key_return", "families_present"}
    assert gate["reference"]["beat_grid_rate"]["n"] > 0 and isinstance(gate["samples"]["fails"], list)
    positions = report["bits_per_token_by_position"]  # the 64-token context in 8 buckets
    assert [r["first"] for r in positions] == list(range(0, 64, 8))
    assert sum(r["tokens"] for r in positions) == report["tokens"]
    weighted = sum(r["bits_per_token"] * r["tokens"] for r in positions if r["tokens"])
    assert weighted / report["tokens"] == pytest.approx(report["bits_per_token"], rel=1e-6)
    text = ["--checkpoint", str(workdir), "--data-dir", str(music21_data_dir), "--split", "train"]
    assert main(["eval", *text, "--max-pieces", "3", "--num-samples", "0", "--position-bucket", "32"]) == 0
    table = capsys.readouterr().out
    assert "window positions" in table and "       32-63  " in table
    assert main(["eval", *text, "--position-bucket", "65"]) == 2
    assert "--position-bucket must be 1 to the model's context (64), got 65" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(workdir), "--num-samples", "-1"]) == 2
    assert "--num-samples must be >= 0" in capsys.readouterr().err
