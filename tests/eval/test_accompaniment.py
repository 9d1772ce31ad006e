"""The accompaniment figures on a real chorale: its bass against its upper voices, and the same bass
moved off the grid or out of the key."""

import music21
import numpy as np
import pytest
from midi_corpus import concatenate_in_time, export_corpus_scores

from musenet_jax.encoding.families import DRUMS
from musenet_jax.encoding.midi_io import read_midi
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.errors import UserError
from musenet_jax.eval.accompaniment import (
    accompaniment_stats,
    beat_times,
    key_consistency,
    key_of,
    onsets_on_grid,
)

TOKENIZER = Tokenizer()


@pytest.fixture(scope="module")
def chorale(tmp_path_factory):
    """bwv66.6 (F# minor, the key of A major's scale) as MIDI files: its upper voices and its bass."""
    root = tmp_path_factory.mktemp("chorale")
    score = music21.corpus.parse("bach/bwv66.6")
    upper, bass = music21.stream.Score(score.parts[:3]), music21.stream.Score(score.parts[3:])
    upper.write("midi", fp=str(root / "upper.mid"))
    bass.write("midi", fp=str(root / "bass.mid"))
    return root / "upper.mid", root / "bass.mid"


def test_the_real_bass_listens_and_a_moved_one_does_not(chorale):
    upper_path, bass_path = chorale
    given, bass = TOKENIZER.midi_to_events(upper_path), TOKENIZER.midi_to_events(bass_path)
    beats = beat_times(read_midi(upper_path))
    assert len(given) > 0 and len(bass) > 0 and np.allclose(np.diff(beats[:4]), beats[1] - beats[0])
    assert key_of(given) == 9  # A major's scale: F# minor
    real = accompaniment_stats(bass, given, beats)
    assert real["onsets_on_grid"] > 0.9 and real["key_consistency"] > 0.9  # a passing eighth or two is off
    late = bass.replace(start_s=bass.start_s + 0.37 * (beats[1] - beats[0]))
    assert onsets_on_grid(late, given, beats) < 0.2
    assert onsets_on_grid(late, given, np.zeros(0), tolerance_s=1.0) == 1.0  # the tolerance widens it
    tritone = bass.replace(pitch=bass.pitch + 6)
    assert key_consistency(tritone, given) < real["key_consistency"] - 0.3


def test_drums_are_judged_on_the_grid_only(tmp_path):
    scores = export_corpus_scores(tmp_path / "scores", ("bach/bwv66.6",))
    piece = TOKENIZER.midi_to_events(
        concatenate_in_time(scores, tmp_path / "d.mid", minutes=0.2, with_drums=True)
    )
    drums, given = piece.select(piece.family == DRUMS), piece.select(piece.family != DRUMS)
    stats = accompaniment_stats(drums, given, np.zeros(0))  # they play the piece's onsets
    assert stats["onsets_on_grid"] == 1.0 and np.isnan(stats["key_consistency"])
    assert np.isnan(onsets_on_grid(drums.select(np.zeros(len(drums), bool)), given, np.zeros(0)))


def test_eval_accompany_stats_refuses_a_model_without_anticipation_in_one_line(capsys):
    from musenet_jax.cli.main import main

    assert main(["eval", "--accompany-stats", "drums"]) == 2  # the bundled model
    err = capsys.readouterr().err
    assert "trained without anticipation and cannot infill or accompany" in err and "Traceback" not in err


@pytest.mark.slow
def test_accompany_stats_of_the_model_and_the_real_part(anticipation_run, tmp_path):
    from musenet_jax.app.evaluate import accompaniment_report
    from musenet_jax.app.run import load_run

    run = load_run(str(anticipation_run), overrides=["sample.seconds=6"])
    scores = export_corpus_scores(tmp_path / "scores", ("bach/bwv66.6",))
    with_drums = concatenate_in_time(scores, tmp_path / "d.mid", minutes=0.2, with_drums=True)
    pieces = [run.tokenizer.encode(with_drums, "bach"), run.tokenizer.encode(scores[0], "bach")]
    report = accompaniment_report(run, pieces, family="drums")
    assert (report["pieces"], report["scored"], report["family"]) == (2, 1, "drums")  # the second has none
    assert report["real"] == {"onsets_on_grid": 1.0, "key_consistency": None}  # they play the piece's onsets
    assert report["model"]["key_consistency"] is None
    grid = report["model"]["onsets_on_grid"]
    assert grid is None or 0.0 <= grid <= 1.0
    with pytest.raises(UserError, match="takes one family"):
        accompaniment_report(run, pieces, family="drums,bass")
