"""render/audio.py: soundfont discovery and renderer()'s one-line reason when WAV output is off.

Generation must go on without FluidSynth; the reason must be one line that says how to install it."""

import pytest

from musenet_jax.render import audio
from musenet_jax.render.audio import INSTALL_HINT, SOUNDFONT_ENV, find_soundfont, renderer


def _fluidsynth_loads() -> bool:
    """pyfluidsynth can be installed (the test extra) while the FluidSynth library it wraps is not (apt)."""
    try:
        import fluidsynth  # noqa: F401
    except ImportError:
        return False
    return True


HAS_FLUIDSYNTH = _fluidsynth_loads()


def test_find_soundfont_prefers_the_environment(tmp_path, monkeypatch):
    font = tmp_path / "mine.sf2"
    font.write_bytes(b"RIFF")
    monkeypatch.setenv(SOUNDFONT_ENV, str(font))
    assert find_soundfont() == font


def test_find_soundfont_named_but_missing_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv(SOUNDFONT_ENV, str(tmp_path / "missing.sf2"))
    assert find_soundfont() is None


def test_find_soundfont_falls_back_to_system_paths(tmp_path, monkeypatch):
    monkeypatch.delenv(SOUNDFONT_ENV, raising=False)
    present = tmp_path / "FluidR3_GM.sf2"
    present.write_bytes(b"RIFF")
    monkeypatch.setattr(audio, "SYSTEM_SOUNDFONTS", (str(tmp_path / "absent.sf2"), str(present)))
    assert find_soundfont() == present


@pytest.mark.skipif(HAS_FLUIDSYNTH, reason="FluidSynth loads here")
def test_renderer_without_fluidsynth_is_none_and_one_line():
    render, why = renderer()
    assert render is None
    assert "\n" not in why and why.startswith("no WAV output") and INSTALL_HINT in why


@pytest.mark.skipif(not HAS_FLUIDSYNTH, reason="FluidSynth does not load here (apt-get install fluidsynth)")
def test_renderer_without_soundfont_is_none_and_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv(SOUNDFONT_ENV, str(tmp_path / "missing.sf2"))
    render, why = renderer()
    assert render is None and "\n" not in why and SOUNDFONT_ENV in why
