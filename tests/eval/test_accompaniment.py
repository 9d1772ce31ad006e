"""The accompaniment figures on a real chorale: its bass against its upper voices, and the same bass
moved off the grid or out of the key; the control of a part written for another piece's given part, on
three real chorales."""

import music21
import numpy as np
import pytest
from midi_corpus import concatenate_in_time, export_corpus_scores

from musenet_jax.app.accompaniment_eval import Piece, accompaniment_report
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
    rotated_by_one,
    side_by_side,
)
from musenet_jax.eval.report import format_accompaniment

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


def test_the_real_basses_beat_their_control_and_a_rotated_bass_does_not(tmp_path):
    uppers, basses = [], []
    for name in ("bach/bwv66.6", "bach/bwv10.7", "bach/bwv11.6"):
        score = music21.corpus.parse(name)
        for part, voices in (("upper", score.parts[:3]), ("bass", score.parts[3:])):
            music21.stream.Score(voices).write("midi", fp=str(tmp_path / f"{part}.mid"))
        uppers.append(TOKENIZER.midi_to_events(tmp_path / "upper.mid"))
        basses.append(TOKENIZER.midi_to_events(tmp_path / "bass.mid"))
    ends = [float(u.end_s.max()) for u in uppers]
    control = rotated_by_one(basses, [10.0, 1e9, 1e9])
    assert len(control[0]) == int((basses[1].start_s < 10.0).sum()) < len(basses[1])  # cut to piece 0
    assert control[2] is not basses[0] and np.array_equal(control[2].pitch, basses[0].pitch)

    listening = side_by_side(basses, basses, uppers, ends)  # a "model" that writes the real bass
    assert listening["closer_than_control"] == {"onsets_on_grid": True, "key_consistency": True}
    assert listening["closer_on_every_figure"] is True
    busy = listening["notes_per_second"]
    assert busy["model"] == busy["real"] == np.mean([len(b) / e for b, e in zip(basses, ends)]) > 0.5
    early = side_by_side(basses, basses, uppers, [e / 2 for e in ends])  # only what starts in the first half
    assert early["notes_per_second"]["real"] == np.mean(
        [np.sum(b.start_s < e / 2) / (e / 2) for b, e in zip(basses, ends)]
    )
    assert listening["control"]["onsets_on_grid"] < listening["real"]["onsets_on_grid"] - 0.3
    assert listening["control"]["key_consistency"] < listening["real"]["key_consistency"] - 0.3
    deaf = side_by_side(basses[1:] + basses[:1], basses, uppers, ends)  # each bass under another chorale
    assert deaf["closer_than_control"] == {"onsets_on_grid": False, "key_consistency": False}
    header = {"family": "bass", "pieces": 3, "scored": 3, "seconds": 30.0, "grid": "-", "control_part": "-"}
    text = format_accompaniment(header | deaf)
    assert "onsets_on_grid" in text and "  no" in text and "is not closer to the real part" in text
    assert "notes per second" in text
    alone = side_by_side(basses[:1], basses[:1], uppers[:1], ends[:1])
    assert alone["control"] is None and alone["closer_on_every_figure"] is None


def test_drums_are_judged_on_the_grid_only(tmp_path):
    scores = export_corpus_scores(tmp_path / "scores", ("bach/bwv66.6",))
    piece = TOKENIZER.midi_to_events(
        concatenate_in_time(scores, tmp_path / "d.mid", minutes=0.2, with_drums=True)
    )
    drums, given = piece.select(piece.family == DRUMS), piece.select(piece.family != DRUMS)
    stats = accompaniment_stats(drums, given, np.zeros(0))  # they play the piece's onsets
    assert stats["onsets_on_grid"] == 1.0 and np.isnan(stats["key_consistency"])
    assert np.isnan(onsets_on_grid(drums.select(np.zeros(len(drums), bool)), given, np.zeros(0)))


@pytest.mark.slow
def test_eval_accompany_stats_refuses_a_model_without_anticipation_in_one_line(tiny_bundle, capsys):
    from musenet_jax.cli.main import main

    assert main(["eval", "--accompany-stats", "drums", "--checkpoint", str(tiny_bundle)]) == 2  # plain
    err = capsys.readouterr().err
    assert "trained without anticipation and cannot infill or accompany" in err and "Traceback" not in err


@pytest.mark.slow
def test_accompany_stats_of_the_model_and_the_real_part(anticipation_run, tmp_path):
    from musenet_jax.app.run import load_run

    run = load_run(str(anticipation_run), overrides=["sample.seconds=6"])
    scores = export_corpus_scores(tmp_path / "scores", ("bach/bwv66.6",))
    with_drums = concatenate_in_time(scores, tmp_path / "d.mid", minutes=0.2, with_drums=True)
    pieces = [piece_of(run, with_drums, "bach"), piece_of(run, scores[0], "bach")]
    report = accompaniment_report(run, pieces, family="drums")
    assert (report["pieces"], report["scored"], report["family"]) == (2, 1, "drums")  # the second has none
    assert report["real"] == {"onsets_on_grid": 1.0, "key_consistency": None}  # they play the piece's onsets
    assert report["model"]["key_consistency"] is None
    grid = report["model"]["onsets_on_grid"]
    assert grid is None or 0.0 <= grid <= 1.0
    assert report["control"] is None and "needs two scored pieces" in format_accompaniment(report)

    (mozart,) = export_corpus_scores(tmp_path / "scores", ("mozart/k80/movement1",))
    other = concatenate_in_time([mozart], tmp_path / "m.mid", minutes=0.2, with_drums=True)
    two = accompaniment_report(run, [pieces[0], piece_of(run, other, "mozart")], family="drums")
    assert two["scored"] == 2 and two["model"]["key_consistency"] is None
    assert two["real"]["onsets_on_grid"] == 1.0
    assert set(two["control"]) == {"onsets_on_grid", "key_consistency"}
    closer = two["closer_than_control"]["onsets_on_grid"]
    figures = (two["model"]["onsets_on_grid"], two["control"]["onsets_on_grid"])
    assert closer is None if None in figures else closer == (abs(figures[0] - 1.0) < abs(figures[1] - 1.0))
    assert "control: the model's part for the next scored piece" in format_accompaniment(two)
    with pytest.raises(UserError, match="takes one family"):
        accompaniment_report(run, pieces, family="drums,bass")
    with pytest.raises(UserError, match="names drums, the family to add"):
        accompaniment_report(run, pieces, family="drums", given="piano,drums")


def piece_of(run, path, composer):
    return Piece(run.tokenizer.midi_to_events(path), composer, np.zeros(0))


@pytest.mark.slow
def test_accompany_stats_on_a_folder_of_midi_files_given_one_family(anticipation_run, tmp_path, capsys):
    """`eval --accompany-stats drums --given piano --midi-dir DIR`: the files' own beats on the grid, a
    corrupt file skipped in one line, only the named family given."""
    from musenet_jax.app.accompaniment_eval import evaluate_accompaniment
    from musenet_jax.app.run import load_run

    run = load_run(str(anticipation_run), overrides=["sample.seconds=6"])
    scores = export_corpus_scores(tmp_path / "scores", ("bach/bwv66.6",))
    folder = tmp_path / "held_out"
    folder.mkdir()
    concatenate_in_time(scores, folder / "band.mid", minutes=0.2, with_drums=True)
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00")
    report = evaluate_accompaniment(
        run, family="drums", midi_dir=str(folder), composer="bach", given="piano", show_progress=False
    )
    assert "broken.mid" in capsys.readouterr().out
    assert (report["pieces"], report["scored"], report["given"]) == (1, 1, "piano")
    assert report["scored_names"] == ["band.mid"] and "tempo map" in report["grid"]
    assert report["real"]["onsets_on_grid"] == 1.0
    assert "given piano" in format_accompaniment(report)
    with pytest.raises(UserError, match="composer"):
        evaluate_accompaniment(run, family="drums", midi_dir=str(folder), composer="bahc")
