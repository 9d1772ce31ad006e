"""WAV rendering with FluidSynth and a General MIDI soundfont, when both are installed (optional).

Install: `pip install 'musenet-jax[audio]'` (pyfluidsynth) and the library plus a soundfont, e.g. on
Debian/Ubuntu `apt-get install fluidsynth fluid-soundfont-gm`. `MUSENET_SOUNDFONT` names another .sf2.
Without them, `renderer()` explains why once and MIDI and PNG output go on as usual.
"""

from __future__ import annotations

import os
import pathlib
import wave
from collections.abc import Callable

import numpy as np

from musenet_jax.encoding.events import Events
from musenet_jax.encoding.families import DRUMS, FAMILIES, FAMILY_PROGRAM

SAMPLE_RATE = 44100
SOUNDFONT_ENV = "MUSENET_SOUNDFONT"
# Where the Debian/Ubuntu soundfont packages put a GM soundfont.
SYSTEM_SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)
INSTALL_HINT = "pip install 'musenet-jax[audio]' and apt-get install fluidsynth fluid-soundfont-gm"
TAIL_S = 1.0  # release time rendered after the last note

Renderer = Callable[[Events, str | os.PathLike], None]


def find_soundfont() -> pathlib.Path | None:
    """The soundfont named by MUSENET_SOUNDFONT, else the first system GM soundfont present."""
    named = os.environ.get(SOUNDFONT_ENV)
    candidates = [named] if named else list(SYSTEM_SOUNDFONTS)
    return next((pathlib.Path(c) for c in candidates if pathlib.Path(c).is_file()), None)


def renderer() -> tuple[Renderer | None, str]:
    """(a function writing Events as a WAV file, "") or (None, the reason WAV output is off)."""
    try:
        import fluidsynth  # pyfluidsynth; raises ImportError when libfluidsynth is missing too
    except ImportError as err:
        return None, f"no WAV output: FluidSynth is not available ({err}); {INSTALL_HINT}"
    soundfont = find_soundfont()
    if soundfont is None:
        return None, f"no WAV output: no GM soundfont found (set {SOUNDFONT_ENV}); {INSTALL_HINT}"
    return (lambda events, path: render_wav(fluidsynth, soundfont, events, path)), ""


def render_wav(fluidsynth, soundfont: pathlib.Path, events: Events, path: str | os.PathLike) -> None:
    """Plays the notes through a FluidSynth synth offline (no audio device), one channel per family."""
    synth = fluidsynth.Synth(samplerate=float(SAMPLE_RATE))
    try:
        font = synth.sfload(str(soundfont))
        for family, name in enumerate(FAMILIES):  # channel = family index; drums land on channel 10 (index 9)
            synth.program_select(family, font, 128 if family == DRUMS else 0, FAMILY_PROGRAM[name])
        times = np.concatenate([events.start_s, events.end_s])
        is_on = np.concatenate([np.ones(len(events), bool), np.zeros(len(events), bool)])
        rows = np.concatenate([np.arange(len(events))] * 2)
        order = np.lexsort((is_on, times))  # at equal times, releases before strikes
        chunks, now = [], 0
        for at, on, row in zip(times[order], is_on[order], rows[order]):
            frame = int(round(at * SAMPLE_RATE))
            if frame > now:
                chunks.append(synth.get_samples(frame - now))
                now = frame
            channel, pitch = int(events.family[row]), int(events.pitch[row])
            if on:
                synth.noteon(channel, pitch, int(events.velocity[row]))
            else:
                synth.noteoff(channel, pitch)
        chunks.append(synth.get_samples(int(TAIL_S * SAMPLE_RATE)))
    finally:
        synth.delete()
    audio = np.concatenate(chunks).astype(np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(audio.tobytes())
