"""Composer labels from the data (data/labels.py): the default vocabulary stays exactly as it was, a dataset's
extra labels are appended in a fixed order, and folder names become token names."""

import pytest

from musenet_jax.data.labels import dataset_composers, labelled_encoding
from musenet_jax.data.source_files import midi_dir_sources, music21_sources
from musenet_jax.encoding.config import DEFAULT_COMPOSERS, EncodingConfig
from musenet_jax.encoding.vocab import Vocabulary, label_name
from musenet_jax.errors import UserError

# The default vocabulary as every checkpoint trained so far knows it: it must never change.
DEFAULT_FINGERPRINT = "2e4290744e4007fd1ea4800df659233042f4b7d113a2e2ea1c7f8f69913e8a65"


def test_the_default_vocabulary_and_its_fingerprint_are_pinned():
    vocab = Vocabulary()
    assert vocab.fingerprint() == DEFAULT_FINGERPRINT
    assert vocab.size == 6436 and vocab.composers == (*DEFAULT_COMPOSERS, "unknown")


def test_the_music21_corpus_labels_are_the_default_list():
    encoding = labelled_encoding(EncodingConfig(), music21_sources())
    assert encoding == EncodingConfig() and Vocabulary(encoding).fingerprint() == DEFAULT_FINGERPRINT


def test_new_labels_follow_the_configured_ones_sorted():
    assert dataset_composers(("bach", "mozart"), ["satie", "bach", "unknown", "bill_evans", "satie"]) == (
        "bach",
        "mozart",
        "bill_evans",
        "satie",
    )


def test_folder_names_become_labels_and_known_folders_keep_the_default_vocabulary(tmp_path):
    for folder in ("Bill  Evans", "bach", "satie"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.mid").write_bytes(b"")
    (tmp_path / "loose.mid").write_bytes(b"")
    sources = midi_dir_sources(tmp_path)
    assert sorted(s.composer for s in sources) == ["bach", "bill_evans", "satie", "unknown"]
    labelled = Vocabulary(labelled_encoding(EncodingConfig(), sources))
    assert labelled.composers[-3:] == ("bill_evans", "satie", "unknown")
    assert labelled.fingerprint() != DEFAULT_FINGERPRINT
    assert labelled.composer_id("Bill Evans") == labelled.composer_id("bill_evans")
    known = [s for s in sources if s.composer in ("bach", "unknown")]
    assert labelled_encoding(EncodingConfig(), known) == EncodingConfig()


def test_an_unknown_label_lists_the_valid_ones_in_one_line():
    with pytest.raises(UserError) as err:
        Vocabulary().composer_id("satie")
    assert "valid:" in str(err.value) and "\n" not in str(err.value)
    assert label_name("  Clara   Schumann ") == "clara_schumann"
