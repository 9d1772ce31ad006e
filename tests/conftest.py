"""Shared test setup: 8 fake CPU devices for every test process, set before JAX is imported, and one XLA
compilation cache for the whole test run."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    # Many tests train or sample the same tiny programs, in the pytest workers (which inherit this
    # environment) and in the CLI subprocesses they start: each program compiles once per test run.
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="musenet-jax-tests-xla-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

import pytest  # noqa: E402
from built_once import built_once  # noqa: E402
from midi_corpus import packaged_midi_files  # noqa: E402


@pytest.fixture(scope="session")
def music21_data_dir(tmp_path_factory):
    """A small music21 subset built with the real TFDS builder, shared by the data and training tests."""
    from musenet_jax.data.prepare import prepare

    return built_once(
        tmp_path_factory,
        "tfds_music21",
        lambda folder: prepare("music21", str(folder), limit=16, workers=2, show_progress=False),
    )


@pytest.fixture(scope="session")
def tiny_run(music21_data_dir, tmp_path_factory):
    """A tiny run trained 3 steps on `music21_data_dir` (read only: copy it to change it)."""
    return built_once(tmp_path_factory, "tiny_run", lambda run: _train(music21_data_dir, run))


@pytest.fixture(scope="session")
def six_step_run(music21_data_dir, tmp_path_factory):
    """A tiny run trained 6 steps: checkpoints at steps 3 and 6, with their manifests (read only)."""
    return built_once(tmp_path_factory, "six_step_run", lambda run: _train(music21_data_dir, run, steps=6))


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run, tmp_path_factory):
    """`tiny_run` exported as a float32 bundle (read only: copy it to change it)."""
    return built_once(tmp_path_factory, "tiny_bundle", lambda bundle: _export(tiny_run, bundle))


@pytest.fixture(scope="session")
def anticipation_run(music21_data_dir, tmp_path_factory):
    """A tiny run trained 3 steps with anticipation on (delta 1 s): it can infill and accompany."""
    overrides = ["encoding.anticipation_s=1"]
    return built_once(
        tmp_path_factory, "anticipation_run", lambda run: _train(music21_data_dir, run, overrides=overrides)
    )


@pytest.fixture(scope="session")
def anticipation_bundle(anticipation_run, tmp_path_factory):
    """`anticipation_run` exported as a float32 bundle (read only: copy it to change it)."""
    return built_once(tmp_path_factory, "anticipation_bundle", lambda out: _export(anticipation_run, out))


def _train(data_dir, workdir, **kwargs) -> None:
    from tiny_run import train_tiny

    train_tiny(data_dir, workdir, **kwargs)


def _export(run, out) -> None:
    from musenet_jax.app.export import export_bundle
    from musenet_jax.app.run import load_run

    export_bundle(load_run(run), out, dtype="float32")


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
