"""symusic and miditoolkit behind the same boundary yield the same notes and the same bad-file reasons."""

import numpy as np
import pytest
from midi_corpus import export_corpus_scores, packaged_midi_files

from musenet_jax.encoding.midi_io import MidiReadError
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.errors import UserError


def test_both_parsers_yield_the_same_notes(tmp_path):
    fast, reference = Tokenizer(parser="symusic"), Tokenizer(parser="miditoolkit")
    files = packaged_midi_files() + export_corpus_scores(tmp_path, ("bach/bwv66.6",))
    for path in files:
        a, b = fast.midi_to_events(path), reference.midi_to_events(path)
        assert len(a) == len(b), path
        np.testing.assert_array_equal(a.pitch, b.pitch)
        np.testing.assert_array_equal(a.family, b.family)
        np.testing.assert_array_equal(a.velocity, b.velocity)
        # symusic converts ticks to seconds in float32
        np.testing.assert_allclose(a.start_s, b.start_s, atol=1e-4)
        np.testing.assert_allclose(a.end_s, b.end_s, atol=1e-4)


@pytest.mark.parametrize("parser", ["symusic", "miditoolkit"])
def test_bad_files_get_the_same_reason(parser, tmp_path):
    tokenizer = Tokenizer(parser=parser)
    (tmp_path / "empty.mid").write_bytes(b"")
    (tmp_path / "text.mid").write_text("hello")
    (tmp_path / "cut.mid").write_bytes(packaged_midi_files()[3].read_bytes()[:60])
    reasons = {}
    for name in ("empty.mid", "text.mid", "cut.mid"):
        with pytest.raises(MidiReadError) as err:
            tokenizer.midi_to_events(tmp_path / name)
        reasons[name] = err.value.reason
    assert reasons == {"empty.mid": "empty", "text.mid": "not_midi", "cut.mid": "corrupt"}


def test_unknown_parser_lists_the_choices():
    with pytest.raises(UserError, match="valid: symusic"):
        Tokenizer(parser="symusik")
