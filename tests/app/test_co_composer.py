"""The co-composer's pieces that need no model: request checks, sessions, openings."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from given_notes import note_rows, starts_in

from musenet_jax.app.co_composer import Session, Sessions, Settings
from musenet_jax.app.openings import OPENING_SECONDS, OPENINGS, opening_midi
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.errors import UserError


def settings(**changes) -> Settings:
    values = dict(composer="bach", instruments=("piano",), seconds=5.0, temperature=1.0, top_p=0.9)
    return Settings(**{**values, **changes})


def test_settings_refuse_bad_requests_in_one_line():
    assert settings().num_candidates == 4
    cases = {
        "choose at least one instrument": dict(instruments=()),
        "unknown instrument 'pianoo'; valid: piano": dict(instruments=("pianoo",)),
        r"seconds per continuation must be in \(0, 60\]": dict(seconds=0.0),
        "candidates must be 1 to 8": dict(num_candidates=9),
        r"top_p must be in \(0, 1\]": dict(top_p=0.0),
        "temperature must be finite and >= 0": dict(temperature=-1.0),
    }
    for message, change in cases.items():
        with pytest.raises(UserError, match=message) as caught:
            settings(**change)
        assert "\n" not in str(caught.value)


def test_a_session_runs_one_request_at_a_time_and_stops_only_a_running_one(tmp_path):
    session = Session(tmp_path / "s")
    assert not session.stop()  # nothing runs: nothing to stop, and no stop waits for the next request
    with session.working():
        with pytest.raises(UserError, match="still composing the last request"):
            with session.working():
                pass
        assert session.stop() and session.stopping
    assert not session.stopping  # the next request starts afresh
    with session.working():
        assert not session.stopping


def test_sessions_are_per_key_and_the_least_recently_used_go_with_their_files(tmp_path):
    made = []

    def make() -> Session:
        made.append(Session(tmp_path / f"s{len(made)}"))
        made[-1].new_folder()
        return made[-1]

    sessions = Sessions(make, capacity=2)
    a, b = sessions.get("a"), sessions.get("b")
    assert a is not b and sessions.get("a") is a
    sessions.get("c")  # "b" was used least recently
    assert set(map(id, sessions.values())) == {id(a), id(made[2])}
    assert not b.folder.exists() and a.folder.exists()
    sessions.drop("a")
    assert not a.folder.exists()


def test_sessions_made_from_many_threads_are_one_per_key(tmp_path):
    sessions = Sessions(lambda: Session(tmp_path / str(threading.get_ident())))
    got = []
    threads = [threading.Thread(target=lambda: got.append(sessions.get("same"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(s) for s in got}) == 1


@pytest.mark.slow
def test_an_opening_is_the_first_seconds_of_its_corpus_score():
    assert "Mozart: Piano Sonata K. 545" in OPENINGS
    tokenizer = Tokenizer()
    events = tokenizer.midi_to_events(opening_midi("Mozart: Piano Sonata K. 545"))
    assert len(events) > 10
    assert events.end_s.max() <= OPENING_SECONDS + 0.01 and np.all(events.family == 0)  # piano
    with pytest.raises(UserError, match="unknown opening 'Mozart'"):
        opening_midi("Mozart")


@pytest.fixture(scope="module")
def anticipating(anticipation_run, tmp_path_factory):
    """A co-composer on the tiny anticipation run and a session holding a composed piano piece."""
    from musenet_jax.app.co_composer import CoComposer
    from musenet_jax.app.run import load_run

    composer = CoComposer(load_run(anticipation_run), tmp_path_factory.mktemp("media"))
    session = composer.new_session()
    composer.compose(session, settings(seconds=6.0, num_candidates=1), opening=next(iter(OPENINGS)))
    composer.extend(session, 0, settings(seconds=2.0, num_candidates=1))
    return composer, session


@pytest.mark.slow
def test_fill_a_span_rewrites_only_its_notes_and_the_result_can_be_extended(anticipating):
    composer, session = anticipating
    before = session.current.piece
    old = composer.events(before.ids)
    offered = composer.fill(session, 1.0, 3.0, settings(num_candidates=2))
    assert len(offered.candidates) == 2 and session.current is offered and offered.piece is before
    outside = ~starts_in(old, 1.0, 3.0)
    for cand in offered.candidates:
        whole = composer.events(cand.ids)
        inside = starts_in(whole, 1.0, 3.0)
        assert note_rows(whole, ~inside) == note_rows(old, outside)  # the rest as it was
        assert (cand.start_s, cand.end_s) == (1.0, 3.0) and cand.roll.stat().st_size > 0
        assert cand.becomes is not None and np.array_equal(cand.becomes.allowed, before.allowed)
    grown = composer.extend(session, 1, settings(seconds=1.0, num_candidates=1))
    np.testing.assert_array_equal(grown.piece.ids, offered.candidates[1].ids)
    assert composer.undo(session) is offered


@pytest.mark.slow
def test_add_a_part_keeps_the_piece_and_adds_only_the_chosen_families(anticipating):
    from musenet_jax.encoding.families import FAMILIES

    composer, session = anticipating
    old = composer.events(session.current.piece.ids)
    with pytest.raises(UserError, match="the piece already plays piano; add a part it lacks"):
        composer.add_part(session, ["piano"], settings())
    with pytest.raises(UserError, match="choose the instruments of the part to add"):
        composer.add_part(session, [], settings())
    offered = composer.add_part(session, ["bass"], settings(num_candidates=2))
    for cand in offered.candidates:
        whole = composer.events(cand.ids)
        given = np.isin(whole.family, np.unique(old.family))
        assert note_rows(whole, given) == note_rows(old)
        assert set(FAMILIES[f] for f in np.unique(whole.family[~given])) <= {"bass"}
        assert cand.becomes.allowed[FAMILIES.index("bass")] and cand.becomes.allowed[FAMILIES.index("piano")]
        assert cand.midi.stat().st_size > 0


@pytest.mark.slow
def test_a_model_without_anticipation_says_it_cannot_fill_or_add_in_one_line(tiny_bundle, tmp_path):
    from musenet_jax.app.co_composer import CoComposer
    from musenet_jax.app.run import load_run

    composer = CoComposer(load_run(str(tiny_bundle)), tmp_path)  # a plain run: trained without anticipation
    assert composer.infill_note.startswith("this model was trained without anticipation")
    session = composer.new_session()
    for ask in (lambda: composer.fill(session, 0.0, 2.0, settings()),
                lambda: composer.add_part(session, ["drums"], settings())):  # fmt: skip
        with pytest.raises(UserError, match="trained without anticipation and cannot infill") as caught:
            ask()
        assert "\n" not in str(caught.value)
