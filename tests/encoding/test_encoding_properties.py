"""Property tests: any sequence of valid ids decodes to a MIDI file that re-reads, and decoding is stable."""

import miditoolkit
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from musenet_jax.encoding.tokenizer import Tokenizer

TOKENIZER = Tokenizer()
valid_ids = st.lists(st.integers(0, TOKENIZER.vocab.size - 1), max_size=300).map(
    lambda x: np.array(x, np.int64)
)
# Sequences that look like music: mostly notes and waits.
note_or_wait = st.one_of(
    st.integers(TOKENIZER.vocab.wait_base, TOKENIZER.vocab.size - 1),
    st.integers(TOKENIZER.vocab.wait_base, TOKENIZER.vocab.note_base - 1),
)
musical_ids = st.lists(note_or_wait, min_size=1, max_size=300).map(lambda x: np.array(x, np.int64))

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(ids=valid_ids)
def test_any_valid_ids_decode_to_a_midi_file_that_rereads(ids, tmp_path_factory):
    path = tmp_path_factory.mktemp("decoded") / "x.mid"
    TOKENIZER.decode(ids).dump(str(path))
    reread = miditoolkit.MidiFile(str(path))
    n_on = int(np.isin(TOKENIZER.vocab.token_kinds[ids], [6]).sum())
    assert sum(len(inst.notes) for inst in reread.instruments) == n_on
    for inst in reread.instruments:
        assert all(note.end > note.start and 1 <= note.velocity <= 127 for note in inst.notes)


@SETTINGS
@given(ids=musical_ids)
def test_decode_encode_decode_is_stable(ids):
    first = TOKENIZER.ids_to_events(ids)
    again = TOKENIZER.ids_to_events(TOKENIZER.events_to_ids(first))
    for column in ("start_s", "end_s", "family", "pitch", "velocity"):
        np.testing.assert_allclose(getattr(again, column), getattr(first, column), atol=1e-9)
    # and the ids themselves reach a fixed point after one round
    ids2 = TOKENIZER.events_to_ids(first)
    np.testing.assert_array_equal(TOKENIZER.events_to_ids(TOKENIZER.ids_to_events(ids2)), ids2)
