"""critic/fakes.py: load_fakes reads make-fakes' .npy files, else encodes MIDI, and refuses bad input in
one line (wrong folder, empty folder, ids outside the vocabulary)."""

import shutil

import numpy as np
import pytest
from midi_corpus import packaged_midi_files

from musenet_jax.critic.fakes import load_fakes
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.errors import UserError

TOKENIZER = Tokenizer()


def test_npy_files_in_name_order_as_int32(tmp_path):
    np.save(tmp_path / "fake_00001.npy", np.array([3, 4, 5], np.int64))
    np.save(tmp_path / "fake_00000.npy", np.array([1, 2], np.int64))
    (tmp_path / "ignored.mid").write_bytes(b"not read when .npy files are present")
    pieces = load_fakes(tmp_path, TOKENIZER)
    assert [p.tolist() for p in pieces] == [[1, 2], [3, 4, 5]]
    assert all(p.dtype == np.int32 for p in pieces)


def test_midi_files_are_encoded(tmp_path):
    source = packaged_midi_files()[0]
    shutil.copy(source, tmp_path / "a.mid")
    pieces = load_fakes(tmp_path, TOKENIZER)
    assert len(pieces) == 1
    np.testing.assert_array_equal(pieces[0], TOKENIZER.encode(source))


@pytest.mark.parametrize("bad", [np.array([-1, 2]), np.array([[1, 2]]), "vocab"])
def test_ids_outside_the_vocabulary_are_refused(tmp_path, bad):
    if isinstance(bad, str):
        bad = np.array([0, TOKENIZER.vocab.size])
    np.save(tmp_path / "fake_00000.npy", bad)
    with pytest.raises(UserError, match="fake_00000.npy: not token ids") as err:
        load_fakes(tmp_path, TOKENIZER)
    assert "\n" not in str(err.value)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_fakes(tmp_path / "nope", TOKENIZER)
    with pytest.raises(UserError, match="no .npy or .mid files"):
        load_fakes(tmp_path, TOKENIZER)
