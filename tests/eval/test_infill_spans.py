"""`eval --infill-spans`: the notes inside a span scored with the future given and left to right, over
exactly the same tokens, on real MIDI."""

import json

import numpy as np
import pytest
from flax import nnx
from midi_corpus import concatenate_in_time, export_corpus_scores

from musenet_jax.cli.main import main
from musenet_jax.config import load_config
from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.encoding.families import DRUMS
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.eval.infill_spans import NO_ANTICIPATION, format_spans, infill_span_scores, pick_spans
from musenet_jax.eval.nll import score_pieces, token_nlls
from musenet_jax.model.transformer import MuseNet


@pytest.fixture(scope="module")
def pieces_midi(tmp_path_factory):
    """Two real pieces of about 20 s, one of them with a drum track."""
    root = tmp_path_factory.mktemp("spans")
    scores = export_corpus_scores(root / "scores", ("bach/bwv66.6", "bach/bwv7.7"))
    return [
        concatenate_in_time(scores[:1], root / "a.mid", minutes=0.3, with_drums=True),
        concatenate_in_time(scores[1:], root / "b.mid", minutes=0.3),
    ]


def untrained(tokenizer: Tokenizer) -> MuseNet:
    cfg = load_config("tiny", ["model.d_model=32", "model.context=64"])
    return MuseNet(cfg.model, tokenizer.vocab.size, rngs=nnx.Rngs(0), time_step_ms=cfg.encoding.time_step_ms)


def notes_in_span(tokenizer: Tokenizer, ids: np.ndarray, start: int, stop: int) -> int:
    """Note-ons plus (non-drum) note-offs of the piece's notes at steps in [start, stop), from its notes."""
    events = tokenizer.ids_to_events(ids)
    on = np.rint(events.start_s / tokenizer.step_s).astype(int)
    off = np.maximum(np.rint(events.end_s / tokenizer.step_s).astype(int), on + 1)[events.family != DRUMS]
    return int(((on >= start) & (on < stop)).sum() + ((off >= start) & (off < stop)).sum())


def test_both_scores_cover_exactly_the_spans_note_tokens(pieces_midi):
    tokenizer = Tokenizer(EncodingConfig(anticipation_s=1.0))
    model = untrained(tokenizer)
    pieces = [tokenizer.encode(path, "bach") for path in pieces_midi]
    report = infill_span_scores(model, tokenizer, pieces, seconds=8.0, seed=1)
    starts = pick_spans(tokenizer, pieces, 8.0, seed=1)
    expected = sum(notes_in_span(tokenizer, ids, s, s + 800) for ids, s in zip(pieces, starts))
    assert report["spans"] == 2 and report["skipped"] == 0 and report["note"] == ""
    assert report["span_tokens"] == report["future_given_span_tokens"] == expected > 0
    for key in ("future_given_bits_per_token", "left_to_right_bits_per_token"):
        assert np.isfinite(report[key]) and report[key] > 0
    assert pick_spans(tokenizer, pieces, 8.0, seed=1) == starts  # seeded
    assert pick_spans(tokenizer, pieces, 8.0, seed=2) != starts

    # The span's last second (delta) is written with the given notes in view, the 7 s before it without;
    # each score is the token-weighted mean of its two parts.
    late = sum(notes_in_span(tokenizer, ids, s + 700, s + 800) for ids, s in zip(pieces, starts))
    parts = report["by_view"]
    assert parts["given_in_view"]["span_tokens"] == late > 0
    assert parts["none_in_view"]["span_tokens"] == expected - late > 0
    for key in ("future_given_bits_per_token", "left_to_right_bits_per_token"):
        weighted = sum(p[key] * p["span_tokens"] for p in parts.values()) / expected
        assert weighted == pytest.approx(report[key])


def test_per_token_scores_add_up_to_the_whole_piece_score(pieces_midi):
    tokenizer = Tokenizer()
    model = untrained(tokenizer)
    pieces = [tokenizer.encode(path, "bach")[:300] for path in pieces_midi]
    nlls = token_nlls(model, tokenizer, pieces)
    assert all(np.isnan(n[0]) and np.isfinite(n[1:]).all() for n in nlls)
    np.testing.assert_allclose(
        [n[1:].sum() for n in nlls], score_pieces(model, tokenizer, pieces).nats_by_piece
    )


def test_without_anticipation_only_the_left_to_right_score_and_one_line(pieces_midi):
    tokenizer = Tokenizer()
    pieces = [tokenizer.encode(path, "bach") for path in pieces_midi]
    report = infill_span_scores(untrained(tokenizer), tokenizer, pieces, seconds=8.0)
    assert report["future_given_bits_per_token"] is None and report["note"] == NO_ANTICIPATION
    assert np.isfinite(report["left_to_right_bits_per_token"])


@pytest.mark.slow
def test_eval_infill_spans_on_an_anticipation_run(anticipation_run, capsys):
    args = ["eval", "--checkpoint", str(anticipation_run), "--infill-spans", "8", "--max-pieces", "3"]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["split"] == "test" and report["spans"] + report["skipped"] == report["pieces"]
    assert np.isfinite(report["future_given_bits_per_token"]) and np.isfinite(
        report["left_to_right_bits_per_token"]
    )
    assert main([*args, "--infill-spans", "0"]) == 2
    assert "--infill-spans takes the span's length in seconds" in capsys.readouterr().err


def test_fill_in_the_middle_scores_the_same_tokens_with_the_whole_future_given(pieces_midi):
    """A run that fills spans in the middle scores the span's notes in its own rows (the given rest first)
    and left to right, over exactly the same tokens; it has no `by_view`, the whole future being in view."""
    tokenizer = Tokenizer(EncodingConfig(anticipation_s=1.0, span_infill="fill_in_middle"))
    cfg = load_config("tiny", ["model.d_model=32", "model.context=512"])
    model = MuseNet(cfg.model, tokenizer.vocab.size, rngs=nnx.Rngs(0), time_step_ms=10)
    pieces = [tokenizer.encode(path, "bach") for path in pieces_midi]
    report = infill_span_scores(model, tokenizer, pieces, seconds=6.0, seed=1)
    starts = pick_spans(tokenizer, pieces, 6.0, seed=1)
    expected = sum(notes_in_span(tokenizer, ids, s, s + 600) for ids, s in zip(pieces, starts))
    assert report["format"] == "fill_in_middle" and "by_view" not in report
    assert report["span_tokens"] == report["future_given_span_tokens"] == expected > 0
    given, control = report["future_given_bits_per_token"], report["another_pieces_rest_given_bits_per_token"]
    assert np.isfinite([given, control, report["left_to_right_bits_per_token"]]).all()
    assert given != control  # the control's given part is another piece's: the same tokens, scored otherwise
    assert "another piece's rest given (control)" in format_spans(report)
