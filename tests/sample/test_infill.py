"""`generate --infill` / `--accompany`: given tokens at their anticipated times, the given file's notes
kept bit for bit, and bad requests as one line."""

import dataclasses
import json
import subprocess
import sys

import miditoolkit
import numpy as np
import pytest
from midi_corpus import concatenate_in_time, export_corpus_scores

from musenet_jax.encoding.anticipation import is_control, require_anticipation
from musenet_jax.encoding.config import EncodingConfig
from musenet_jax.encoding.events import Events
from musenet_jax.encoding.timing import duration_steps
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.encoding.vocab import KIND_CONTROL_ON, KIND_NOTE_OFF, KIND_NOTE_ON, Vocabulary
from musenet_jax.errors import UserError
from musenet_jax.sample.infill import (
    anticipated_request,
    bar_span,
    given_for_accompaniment,
    given_for_infill,
    parse_span,
    read_piece,
    with_new_notes,
)


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(EncodingConfig(anticipation_s=1.0))


@pytest.fixture(scope="module")
def piece(tmp_path_factory):
    """About 20 s of a real chorale (piano) with a drum track playing its onsets."""
    root = tmp_path_factory.mktemp("piece")
    scores = export_corpus_scores(root / "scores", ("bach/bwv66.6",))
    return concatenate_in_time(scores, root / "with_drums.mid", minutes=0.3, with_drums=True)


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "musenet_jax.cli.main", *map(str, args)], capture_output=True, text=True
    )


def note_rows(inst):
    return [(n.pitch, n.start, n.end, n.velocity) for n in inst.notes]


def test_bad_requests_are_one_line(tokenizer, piece, tmp_path):
    midi = read_piece(piece)
    with pytest.raises(UserError, match="lies outside"):
        given_for_infill(tokenizer, midi, 500.0, 510.0, piece)
    with pytest.raises(UserError, match="lies outside"):
        given_for_infill(tokenizer, midi, 8.0, 4.0, piece)
    with pytest.raises(UserError, match="already has drums"):
        given_for_accompaniment(tokenizer, midi, "bass,drums", piece)
    empty = miditoolkit.MidiFile()
    empty.instruments.append(miditoolkit.Instrument(0))
    empty.dump(str(tmp_path / "silent.mid"))
    with pytest.raises(UserError, match="silent.mid: the file has no notes"):
        read_piece(tmp_path / "silent.mid")
    with pytest.raises(UserError, match="trained without anticipation and cannot infill"):
        require_anticipation(Vocabulary(EncodingConfig()))
    with pytest.raises(UserError, match="--infill takes START:END"):
        parse_span("12-20", "--infill")
    with pytest.raises(UserError, match="whole bars"):
        bar_span(midi, 3, 2, piece)


def test_bars_follow_tempo_map_and_time_signatures():
    midi = miditoolkit.MidiFile(ticks_per_beat=480)
    midi.tempo_changes = [miditoolkit.TempoChange(120.0, 0)]  # a beat is 0.5 s
    midi.time_signature_changes = [miditoolkit.TimeSignature(4, 4, 0), miditoolkit.TimeSignature(3, 4, 3840)]
    midi.instruments = [miditoolkit.Instrument(0, notes=[miditoolkit.Note(80, 60, 0, 9000)])]
    midi.max_tick = 9000
    assert bar_span(midi, 2, 4, "x.mid") == pytest.approx((2.0, 7.0))  # bar 2 at 2 s; bars 3-4 are 3/4


def test_request_puts_the_given_tokens_at_their_anticipated_times(tokenizer, piece):
    vocab = tokenizer.vocab
    delta = vocab.anticipation_steps
    given = given_for_infill(tokenizer, read_piece(piece), 4.0, 8.0, piece)
    assert not np.any((given.events.start_s >= 4.0 - 0.005) & (given.events.start_s < 8.0 - 0.005))
    request = anticipated_request(tokenizer, "bach", given, ["piano", "drums"], ["piano", "drums"])
    # The prompt reaches the span's start on the events' clock (delta after it on the controls').
    assert duration_steps(request.prompt, vocab) == given.start_step + delta == 400 + delta
    assert request.target_steps == given.stop_step + delta
    assert np.all(np.diff(request.forced_at) >= 0) and request.forced_at[0] >= 400 + delta
    # Forced: only controls, and the note-offs at the span's start of notes held into it; no event onset.
    kinds = vocab.token_kinds[request.forced]
    assert not np.any(kinds == KIND_NOTE_ON)
    assert np.all(is_control(request.forced, vocab) | (request.forced_at == 400 + delta))
    # Every given note from the span's end on is one control note-on at its own time.
    after = given.events.select(np.rint(given.events.start_s / tokenizer.step_s) >= given.stop_step)
    control_ons = kinds == KIND_CONTROL_ON
    np.testing.assert_array_equal(
        np.sort(request.forced_at[control_ons]), np.sort(np.rint(after.start_s / tokenizer.step_s))
    )


def test_new_tracks_leave_the_files_notes_as_they_are(piece):
    midi = read_piece(piece)
    new = Events.from_columns([0.5, 30.0], [1.0, 31.5], [5, 5], [40, 43], [70, 90])  # one past the end
    out = with_new_notes(midi, new, "accompany")
    assert [note_rows(i) for i in out.instruments[: len(midi.instruments)]] == [
        note_rows(i) for i in midi.instruments
    ]
    [added] = out.instruments[len(midi.instruments) :]
    assert added.name == "accompany: bass" and added.program == 32
    mapping = out.get_tick_to_time_mapping()
    assert [round(mapping[n.start], 2) for n in added.notes] == [0.5, 30.0]


@pytest.mark.slow
def test_a_model_without_anticipation_refuses_in_one_line(tiny_bundle, piece, tmp_path):
    args = ["--prompt", piece, "--infill", "4:8", "--composer", "bach", "--out", tmp_path]
    result = cli("generate", "--checkpoint", tiny_bundle, *args)  # a plain run's bundle
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if "anticipation" in line]
    assert "this model was trained without anticipation and cannot infill" in line


@pytest.mark.slow
def test_infill_and_accompany_keep_every_given_note_bit_for_bit(anticipation_run, piece, tmp_path):
    source = miditoolkit.MidiFile(str(piece))
    mapping = source.get_tick_to_time_mapping()
    common = ("--checkpoint", anticipation_run, "--composer", "bach", "--num-samples", "2")
    result = cli("generate", *common, "--prompt", piece, "--infill", "4:8", "--out", tmp_path / "fill")
    assert result.returncode == 0, result.stderr
    result = cli(
        "generate", *common, "--accompany", piece, "--instruments", "bass", "--out", tmp_path / "acc"
    )
    assert result.returncode == 0, result.stderr
    outside = lambda inst: [  # noqa: E731
        (n.pitch, n.start, n.end, n.velocity) for n in inst.notes if not 4.0 <= mapping[n.start] < 8.0
    ]
    new_notes = 0
    for k in range(2):
        filled = miditoolkit.MidiFile(str(tmp_path / "fill" / f"sample_{k}.mid"))
        given = filled.instruments[: len(source.instruments)]
        assert [(i.program, i.is_drum) for i in given] == [(i.program, i.is_drum) for i in source.instruments]
        assert [note_rows(i) for i in given] == [outside(i) for i in source.instruments]
        out_mapping = filled.get_tick_to_time_mapping()
        for inst in filled.instruments[len(source.instruments) :]:
            assert inst.name.startswith("infill: ")
            assert all(4.0 - 0.01 <= out_mapping[n.start] < 8.0 for n in inst.notes)
            new_notes += len(inst.notes)
        added = miditoolkit.MidiFile(str(tmp_path / "acc" / f"sample_{k}.mid"))
        given = added.instruments[: len(source.instruments)]
        assert [(i.program, i.is_drum) for i in given] == [(i.program, i.is_drum) for i in source.instruments]
        assert [note_rows(i) for i in given] == [note_rows(i) for i in source.instruments]
        assert [i.name for i in added.instruments[len(source.instruments) :]] in ([], ["accompany: bass"])
    assert new_notes > 0
    span = json.loads((tmp_path / "fill" / "ranking.json").read_text())
    removed = sum(4.0 <= mapping[n.start] < 8.0 for inst in source.instruments for n in inst.notes)
    assert span["span"]["original_notes"] == removed > 0
    assert span["span"]["original"]["note_density"] > 0
    assert all(set(c["span_stats"]) == set(span["span"]["original"]) for c in span["candidates"])


@pytest.mark.slow
def test_sampler_writes_every_given_token_at_its_time(anticipation_run, piece):
    """The candidates' own tokens: each forced token at exactly its clock step, in order, and nothing
    drawn after the span's end on the events' clock."""
    from musenet_jax.app.run import load_run
    from musenet_jax.encoding.timing import token_times

    run = load_run(anticipation_run)
    tokenizer = run.tokenizer
    given = given_for_infill(tokenizer, read_piece(piece), 4.0, 8.0, piece)
    request = anticipated_request(tokenizer, "bach", given, ["piano", "drums"], ["piano", "drums"])
    due = request.forced_at < request.target_steps
    [candidate] = run.sampler().sample([request], max_new_tokens=96 + int(due.sum()), seed=3)
    assert candidate.stopped_by == "length"
    ids = candidate.open_ids
    times = token_times(ids, tokenizer.vocab)
    tail = np.arange(len(ids)) >= len(request.prompt)
    written = tail & is_control(ids, tokenizer.vocab)
    np.testing.assert_array_equal(
        ids[written], request.forced[due][is_control(request.forced[due], tokenizer.vocab)]
    )
    np.testing.assert_array_equal(
        times[written], request.forced_at[due][is_control(request.forced[due], tokenizer.vocab)]
    )
    assert times[-1] <= request.target_steps


@pytest.mark.slow
@pytest.mark.parametrize("order", ["controls_first", "events_first"])
def test_an_untrained_model_writes_its_request_in_the_order_training_shows(piece, order):
    """Whatever the model draws, the sampler writes the given controls where the encoding puts them: each
    at its own clock step, and after the step's events where the encoding says `events_first`. Re-encoding
    a candidate's notes and controls gives back its very tokens: sampled sequences are training sequences."""
    from flax import nnx

    from musenet_jax.config import load_config
    from musenet_jax.encoding.anticipation import anticipated_ids, split_anticipated
    from musenet_jax.encoding.timing import token_times
    from musenet_jax.model.transformer import MuseNet
    from musenet_jax.sample.sampler import Sampler

    tokenizer = Tokenizer(EncodingConfig(anticipation_s=1.0, anticipation_order=order))
    vocab = tokenizer.vocab
    model = MuseNet(load_config("tiny", ["model.d_model=32"]).model, vocab.size, rngs=nnx.Rngs(0))
    given = given_for_infill(tokenizer, read_piece(piece), 4.0, 8.0, piece)
    request = anticipated_request(tokenizer, "bach", given, ["piano", "drums"], ["piano", "drums"])
    due = request.forced_at < request.target_steps
    candidates = Sampler(model, tokenizer).sample([request] * 3, max_new_tokens=400, seed=1)
    for candidate in candidates:
        ids = candidate.open_ids
        times = token_times(ids, vocab)
        controls = is_control(ids, vocab)
        written = controls & (np.arange(len(ids)) >= len(request.prompt))
        wanted = due & is_control(request.forced, vocab)
        np.testing.assert_array_equal(ids[written], request.forced[wanted])
        np.testing.assert_array_equal(times[written], request.forced_at[wanted])
        kinds = vocab.token_kinds[ids]
        event = (kinds == KIND_NOTE_ON) | (kinds == KIND_NOTE_OFF)
        same_step = times[1:] == times[:-1]
        if order == "events_first":  # no event after a control of its step
            assert not np.any(controls[:-1] & event[1:] & same_step)
        assert written.sum() > 10 and event[len(request.prompt) :].sum() > 10
        events, given_controls = split_anticipated(tokenizer, ids)
        again = anticipated_ids(tokenizer, events, given_controls, "bach")
        body = again[tokenizer.prefix_length(again) :]
        np.testing.assert_array_equal(body[: len(ids) - request.prefix_length], ids[request.prefix_length :])


@pytest.mark.slow
def test_rule_14_makes_an_untrained_models_added_part_play_with_the_given_one(piece):
    """With a strong `onset_bias` the new part's notes start where given notes start (on the events' clock),
    about as many of them as without it; an untrained model without it plays on its own clock."""
    from flax import nnx

    from musenet_jax.config import load_config
    from musenet_jax.eval.accompaniment import onsets_on_grid
    from musenet_jax.model.transformer import MuseNet
    from musenet_jax.sample.grammar import GrammarTables
    from musenet_jax.sample.infill import new_notes
    from musenet_jax.sample.sampler import Sampler

    tokenizer = Tokenizer(EncodingConfig(anticipation_s=1.0))
    model = MuseNet(load_config("tiny", ["model.d_model=32"]).model, tokenizer.vocab.size, rngs=nnx.Rngs(0))
    given, new = given_for_accompaniment(tokenizer, read_piece(piece), ["bass"], piece)
    given = dataclasses.replace(given, stop_step=600)  # the first 6 s
    request = anticipated_request(tokenizer, "bach", given, ["piano", "drums", "bass"], new)
    # Every given onset is known to the rule, those already in the prompt (the first delta) included.
    steps = (
        np.unique(np.rint(given.events.start_s / tokenizer.step_s).astype(int))
        + tokenizer.vocab.anticipation_steps
    )
    known = Sampler(model, tokenizer, tables=GrammarTables.from_vocab(tokenizer.vocab, onset_bias=1.0))
    together, listening = known._given_onsets([request])
    np.testing.assert_array_equal(np.flatnonzero(together[0]), steps[steps <= 600 + 100])
    assert listening.tolist() == [True]
    share, notes = {}, {}
    for strength in (0.0, 30.0):
        tables = GrammarTables.from_vocab(tokenizer.vocab, onset_bias=strength)
        candidates = Sampler(model, tokenizer, tables=tables).sample(
            [request] * 3, max_new_tokens=300, seed=2
        )
        parts = [new_notes(tokenizer, c.ids, 0) for c in candidates]
        assert all(len(part) for part in parts)
        within = tokenizer.step_s / 2 + 1e-6  # the given notes' own times, quantized to the time grid
        share[strength] = np.mean([onsets_on_grid(part, given.events, np.zeros(0), within) for part in parts])
        notes[strength] = np.mean([len(part) for part in parts])
    assert share[30.0] > 0.8 and share[30.0] > share[0.0] + 0.3, share
    assert notes[30.0] >= notes[0.0] / 2, notes  # it plays with the given part, not only seldom


@pytest.mark.slow
def test_rule_14_leaves_a_fill_and_a_continuation_as_they_were(tokenizer, piece):
    """An infill's span has no given onset in it and a continuation none at all: rule 14 would silence
    them, so with it on they are drawn exactly as with it off."""
    from flax import nnx

    from musenet_jax.config import load_config
    from musenet_jax.model.transformer import MuseNet
    from musenet_jax.sample.conditioning import make_request
    from musenet_jax.sample.grammar import GrammarTables
    from musenet_jax.sample.sampler import Sampler

    model = MuseNet(load_config("tiny", ["model.d_model=32"]).model, tokenizer.vocab.size, rngs=nnx.Rngs(0))
    given = given_for_infill(tokenizer, read_piece(piece), 4.0, 8.0, piece)
    fill = anticipated_request(tokenizer, "bach", given, ["piano", "drums"], ["piano", "drums"])
    continuation = make_request(tokenizer, "bach", "piano", 4.0)
    for request in (fill, continuation):
        drawn = []
        for strength in (0.0, 30.0):
            tables = GrammarTables.from_vocab(tokenizer.vocab, onset_bias=strength)
            sampler = Sampler(model, tokenizer, tables=tables)
            drawn.append(sampler.sample([request] * 2, max_new_tokens=300, seed=3))
        for off, on in zip(*drawn, strict=True):
            assert len(off.ids) > len(request.prompt) + 20
            np.testing.assert_array_equal(on.ids, off.ids)


@pytest.mark.slow
def test_a_span_filled_in_the_middle_keeps_its_given_part_through_window_slides(piece):
    """With `span_infill=fill_in_middle` the prompt is the given rest of the piece, then the piece up to the
    span; a context too short for it makes the sampler slide its window, and every slide keeps the given
    part with the prefix. New notes start inside the span only, and the candidate's stream up to the span is
    the prompt's, token for token."""
    from flax import nnx

    from musenet_jax.config import load_config
    from musenet_jax.model.transformer import MuseNet
    from musenet_jax.sample.infill import fim_request, new_notes
    from musenet_jax.sample.sampler import Sampler

    tokenizer = Tokenizer(EncodingConfig(anticipation_s=1.0, span_infill="fill_in_middle"))
    vocab = tokenizer.vocab
    context = 128
    cfg = load_config("tiny", ["model.d_model=32", f"model.context={context}"])
    model = MuseNet(cfg.model, vocab.size, rngs=nnx.Rngs(0))
    given = given_for_infill(tokenizer, read_piece(piece), 10.0, 14.0, piece)
    request = fim_request(tokenizer, "bach", given, ["piano", "drums"], context)
    assert len(request.prompt) > context  # the window must slide
    assert request.prefix_length <= context // 4
    assert request.prompt[request.prefix_length - 1] == vocab.fim_middle_id
    assert request.times[request.prefix_length - 2] >= given.stop_step  # the given part's last token
    candidates = Sampler(model, tokenizer).sample([request] * 2, max_new_tokens=300, seed=2)
    written = 0
    for candidate in candidates:
        assert candidate.stopped_by == "length"
        np.testing.assert_array_equal(candidate.ids[: len(request.prompt)], request.prompt)
        new = new_notes(tokenizer, candidate.ids, given.start_step)
        onset = np.rint(new.start_s / tokenizer.step_s)
        assert np.all((onset >= given.start_step) & (onset < given.stop_step))
        written += len(new)
        drawn = candidate.ids[len(request.prompt) :]
        assert not np.any(is_control(drawn, vocab))  # neither controls nor markers are ever drawn
        assert not np.any(np.isin(drawn, (vocab.fim_suffix_id, vocab.fim_middle_id)))
    assert written > 0
