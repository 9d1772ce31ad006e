"""Shared test setup: 8 fake CPU devices for every test process, set before JAX is imported."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import shutil  # noqa: E402

import pytest  # noqa: E402
from midi_corpus import packaged_midi_files  # noqa: E402


@pytest.fixture(scope="session")
def music21_data_dir(tmp_path_factory):
    """A small music21 subset built with the real TFDS builder, shared by the data and training tests."""
    from musenet_jax.data.prepare import prepare

    data_dir = tmp_path_factory.mktemp("tfds_music21")
    prepare("music21", str(data_dir), limit=16, workers=2, show_progress=False)
    return data_dir


@pytest.fixture(scope="session")
def tiny_bundle(music21_data_dir, tmp_path_factory):
    """A float32 bundle of a 3-step tiny run on `music21_data_dir` (read only: copy it to change it)."""
    from tiny_run import export_tiny_bundle

    return export_tiny_bundle(music21_data_dir, tmp_path_factory.mktemp("tiny_bundle"))


@pytest.fixture(scope="session")
def anticipation_run(music21_data_dir, tmp_path_factory):
    """A tiny run trained 3 steps with anticipation on (delta 1 s): it can infill and accompany."""
    from tiny_run import train_tiny

    return train_tiny(
        music21_data_dir, tmp_path_factory.mktemp("anticipation_run"), overrides=["encoding.anticipation_s=1"]
    )


@pytest.fixture(scope="session")
def anticipation_bundle(anticipation_run, tmp_path_factory):
    """`anticipation_run` exported as a float32 bundle (read only: copy it to change it)."""
    from musenet_jax.app.export import export_bundle
    from musenet_jax.app.run import load_run

    out = tmp_path_factory.mktemp("anticipation_bundle") / "bundle"
    export_bundle(load_run(anticipation_run), out, dtype="float32")
    return out


@pytest.fixture(scope="session")
def mixed_midi_dir(tmp_path_factory):
    """Good MIDI (in composer sub-folders) mixed with a corrupt file, an empty file and a text file."""
    root = tmp_path_factory.mktemp("midi_in")
    good = packaged_midi_files()
    for n, path in enumerate(good):
        folder = root / ("bach" if n % 2 else "mozart")
        folder.mkdir(exist_ok=True)
        shutil.copy(path, folder / path.name)
    (root / "corrupt.mid").write_bytes(good[0].read_bytes()[:40])
    (root / "empty.mid").write_bytes(b"")
    (root / "notes.mid").write_text("a text file named .mid")
    return root
