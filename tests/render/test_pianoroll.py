"""render/pianoroll.py: a PNG of the expected size from real MIDI, without touching pyplot's global state.

The docstring promises a bare Figure (safe in notebooks): no pyplot figure is left open and the backend is
not switched."""

import sys

import matplotlib
import numpy as np
from midi_corpus import packaged_midi_files
from PIL import Image

from musenet_jax.encoding.families import FAMILIES
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.render.pianoroll import family_colours, save_pianoroll

TOKENIZER = Tokenizer()


def _real_ids():
    for path in packaged_midi_files():
        ids = TOKENIZER.encode(path)
        if len(TOKENIZER.ids_to_events(ids)) > 5:
            return ids
    raise AssertionError("no packaged MIDI file with notes")


def test_writes_a_png_of_the_figure_size(tmp_path):
    backend = matplotlib.get_backend()
    pyplot = sys.modules.get("matplotlib.pyplot")
    figures = pyplot.get_fignums() if pyplot else None
    path = tmp_path / "roll.png"
    save_pianoroll(TOKENIZER, _real_ids(), path, prompt_seconds=1.0, title="a title")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1200, 400)
        pixels = np.asarray(image.convert("L"))
    assert pixels.min() < 128  # something was drawn, not a blank canvas
    assert matplotlib.get_backend() == backend
    if pyplot is None:
        assert "matplotlib.pyplot" not in sys.modules  # never imported pyplot
    else:
        assert pyplot.get_fignums() == figures  # no figure left open in pyplot


def test_no_notes_still_writes_a_png(tmp_path):
    path = tmp_path / "empty.png"
    save_pianoroll(TOKENIZER, np.zeros((0,), np.int32), path)
    with Image.open(path) as image:
        assert image.size == (1200, 400)


def test_one_distinct_colour_per_family():
    colours = family_colours()
    assert list(colours) == list(FAMILIES)
    assert len(set(colours.values())) == len(FAMILIES)
