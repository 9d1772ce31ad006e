"""`serve`'s page on the bundled model (what `serve` without --checkpoint gives): in a real browser
(compose, extend, fill a span, add a part), through the app's API, and under bad input with a second user
at once; and on a run trained without anticipation, whose page refuses to fill or add in one line. The
server runs in this process, so its sessions (the app's state) can be read."""

from __future__ import annotations

import os
import pathlib
import shutil
import threading

import numpy as np
import pytest
from given_notes import note_rows, starts_in
from gradio_client import Client, handle_file
from midi_corpus import packaged_midi_files

from musenet_jax.app.co_composer import CoComposer, Session
from musenet_jax.app.run import load_run
from musenet_jax.app.web import CoComposerApp
from musenet_jax.bench.serve import free_port
from musenet_jax.encoding.families import FAMILIES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT_DIR = "MUSENET_SCREENSHOT_DIR"  # where the browser test leaves its screenshot (default: tmp)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run = load_run(None, overrides=["sample.max_new_tokens=0"])  # the budget follows the seconds asked
    app = CoComposerApp(CoComposer(run, tmp_path_factory.mktemp("media")), concurrency=2)
    url = app.launch("127.0.0.1", free_port(), block=False)
    yield app, url
    app.close()


def compose_inputs(seconds: float = 3.0, candidates: int = 2, intro: str = "none", upload=None) -> tuple:
    return ("bach", ["piano"], intro, upload, seconds, 1.0, 1.0, candidates)


def same_notes(app: CoComposerApp, midi_path: pathlib.Path, ids: np.ndarray) -> None:
    """The MIDI file holds exactly the notes of `ids`: family, pitch, velocity bin, onset and release
    within one time step."""
    tokenizer = app.composer.tokenizer
    got, want = tokenizer.midi_to_events(str(midi_path)), app.composer.events(ids)
    assert len(got) == len(want) > 0
    np.testing.assert_array_equal(got.family, want.family)
    np.testing.assert_array_equal(got.pitch, want.pitch)
    vocab = tokenizer.vocab
    np.testing.assert_array_equal(vocab.velocity_to_bin(got.velocity), vocab.velocity_to_bin(want.velocity))
    np.testing.assert_allclose(got.start_s, want.start_s, atol=tokenizer.step_s)
    np.testing.assert_allclose(got.end_s, want.end_s, atol=tokenizer.step_s)


def new_session(app: CoComposerApp, before: list[Session]) -> Session:
    (session,) = [s for s in app.sessions.values() if all(s is not b for b in before)]
    return session


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install -y chromium)")
def test_in_a_browser_compose_play_extend_and_download_the_piece_shown(server, tmp_path):
    from playwright.sync_api import sync_playwright

    app, url = server
    before = app.sessions.values()
    shots = pathlib.Path(os.environ.get(SCREENSHOT_DIR) or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--mute-audio"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(600_000)  # a loaded 2-core machine compiles the sampler slowly
            page.goto(url)
            page.get_by_label("number input for Seconds per continuation").fill("5")
            page.get_by_label("number input for Candidates").fill("2")
            page.get_by_label("number input for Candidates").press("Enter")
            page.get_by_role("button", name="Compose").click()
            page.locator("#status").get_by_text("Choose a candidate").wait_for()
            assert page.locator("#candidate-2").first.is_visible()
            assert not page.locator("#candidate-3").first.is_visible()

            first = page.locator("#candidate-1").first
            if app.composer.render is not None:  # play candidate 1: the player's clock moves
                first.get_by_role("button", name="Play", exact=True).click()
                first.get_by_role("button", name="Pause", exact=True).wait_for()
                clock = "document.querySelector('#candidate-1 time').textContent"
                page.wait_for_function(f"() => {clock} !== '0:00'")
            else:
                page.get_by_text("no WAV output").wait_for()

            page.locator("#chosen").get_by_label("Candidate 1").check()
            page.get_by_role("button", name="Extend").click()
            page.locator("#piece").get_by_text("The piece so far: 5.0 s").wait_for()
            page.locator("#status").get_by_text("Choose a candidate").wait_for()
            page.screenshot(path=str(shots / "co_composer.png"), full_page=True)

            with page.expect_download() as download:
                page.get_by_role("button", name="Download piece (MIDI)").click()
            midi = tmp_path / "piece.mid"
            download.value.save_as(midi)

            # The bundled model was trained with anticipation: fill a span of the piece, then add a part.
            assert not page.locator("#infill-note").is_visible()
            page.locator("#fill-start input").fill("1")
            page.locator("#fill-end input").fill("3")
            page.get_by_role("button", name="Fill span").click()
            page.locator("#candidate-1").get_by_text("1.0 s to 3.0 s").wait_for()
            page.locator("#status").get_by_text("Choose a candidate").wait_for()
            page.locator("#parts").get_by_label("bass").check()
            page.get_by_role("button", name="Add part").click()
            page.locator("#candidate-1").get_by_text("0.0 s to").wait_for()
            page.locator("#status").get_by_text("Choose a candidate").wait_for()
            # the corpus has no bass: the page says so, and rule 12 still makes the part play (below)
            assert "(bass in 0 of" in page.locator("#status").inner_text()

            # bad input: one line in the page, the page goes on
            page.locator("#instruments").get_by_label("piano").uncheck()
            page.get_by_role("button", name="Compose").click()
            toast = page.get_by_test_id("toast-text").get_by_text("choose at least one instrument")
            toast.wait_for()
            assert toast.inner_text().strip() == "choose at least one instrument"
            session = new_session(app, before)  # read before the page closes: leaving drops the session
        finally:
            browser.close()
    assert len(session.rounds) == 4  # compose, extend, fill, add
    piece = session.current.piece
    np.testing.assert_array_equal(piece.ids, session.rounds[0].candidates[0].ids)  # grown by candidate 1
    same_notes(app, midi, piece.ids)
    assert (shots / "co_composer.png").stat().st_size > 10_000
    fill_round, add_round = session.rounds[2:]
    assert fill_round.piece is piece is add_round.piece  # neither changes the piece until one is chosen
    old = app.composer.events(piece.ids)
    filled = []
    for cand in fill_round.candidates:
        whole = app.composer.events(cand.ids)
        inside = starts_in(whole, 1.0, 3.0)
        assert note_rows(whole, ~inside) == note_rows(old, ~starts_in(old, 1.0, 3.0))  # the rest as it was
        assert (cand.start_s, cand.end_s) == (1.0, 3.0)
        filled.append(int(inside.sum()))
    assert len(filled) == 2 and sum(filled) > 0  # the span is written anew, not left empty
    bass = FAMILIES.index("bass")
    added = []
    for cand in add_round.candidates:
        whole = app.composer.events(cand.ids)
        assert note_rows(whole, whole.family != bass) == note_rows(old)  # every given note kept
        added.append(int((whole.family == bass).sum()))
    assert added[0] > 0 and added[1] > 0  # a bass part in each candidate, and nothing else new


@pytest.fixture(scope="module")
def plain_server(tiny_bundle, tmp_path_factory):
    """The page on a run trained without anticipation (the tiny plain run's bundle)."""
    app = CoComposerApp(CoComposer(load_run(str(tiny_bundle)), tmp_path_factory.mktemp("media")))
    url = app.launch("127.0.0.1", free_port(), block=False)
    yield app, url
    app.close()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install -y chromium)")
def test_in_a_browser_a_model_without_anticipation_refuses_to_fill_or_add_in_one_line(plain_server):
    from playwright.sync_api import sync_playwright

    app, url = plain_server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--mute-audio"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(600_000)
            page.goto(url)
            note = page.locator("#infill-note")
            assert note.inner_text().strip().startswith("this model was trained without anticipation")
            for button in ("Fill span", "Add part"):
                page.get_by_role("button", name=button).click()
                refusal = page.get_by_test_id("toast-text").get_by_text("trained without anticipation")
                refusal.first.wait_for()
                assert "\n" not in refusal.first.inner_text().strip()
                page.get_by_test_id("toast-close").first.click()
        finally:
            browser.close()
    assert all(not session.rounds for session in app.sessions.values())  # nothing was composed


@pytest.mark.slow
def test_through_the_api_compose_extend_undo(server):
    app, url = server
    before = app.sessions.values()
    client = Client(url, verbose=False)
    first = client.predict(*compose_inputs(seconds=3.0), api_name="/compose")[0]
    assert [c["candidate"] for c in first["candidates"]] == [1, 2]
    assert first["piece_seconds"] == 0 and all(c["end_s"] == 3.0 for c in first["candidates"])
    grown = client.predict(2, 2.0, 1.0, 1.0, 3, api_name="/extend")[0]
    assert grown["piece_seconds"] == 3.0 and grown["piece_notes"] == first["candidates"][1]["notes"]
    assert len(grown["candidates"]) == 3 and all(c["end_s"] == 5.0 for c in grown["candidates"])
    session = new_session(app, before)
    np.testing.assert_array_equal(session.current.piece.ids, session.rounds[0].candidates[1].ids)
    back = client.predict(api_name="/undo")[0]
    assert back == first and len(session.rounds) == 1
    with pytest.raises(Exception, match="nothing to undo"):
        client.predict(api_name="/undo")


@pytest.mark.slow
def test_a_corrupt_upload_is_one_line_and_a_second_user_is_served_meanwhile(server, tmp_path):
    app, url = server
    corrupt = tmp_path / "broken.mid"
    corrupt.write_bytes(packaged_midi_files()[0].read_bytes()[:40])
    alice, bob = Client(url, verbose=False), Client(url, verbose=False)
    outcome: dict[str, object] = {}

    def ask(name: str, client: Client, inputs: tuple) -> None:
        try:
            outcome[name] = client.predict(*inputs, api_name="/compose")[0]
        except Exception as err:  # the app's one-line message, as the client receives it
            outcome[name] = err

    broken = compose_inputs(intro="uploaded MIDI", upload=handle_file(corrupt))
    threads = [
        threading.Thread(target=ask, args=("bob", bob, compose_inputs(seconds=2.0))),
        threading.Thread(target=ask, args=("alice", alice, broken)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    message = str(outcome["alice"])
    assert "broken.mid" in message and "Traceback" not in message and str(tmp_path) not in message
    assert [c["end_s"] for c in outcome["bob"]["candidates"]] == [2.0, 2.0]
    again = alice.predict(*compose_inputs(seconds=2.0), api_name="/compose")[0]  # the server goes on
    assert len(again["candidates"]) == 2
