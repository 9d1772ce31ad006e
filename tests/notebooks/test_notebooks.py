"""The Colab notebooks run top to bottom on CPU with small settings (a parameters cell overridden the way
papermill does: an injected cell right after it), so a dependency change that breaks a demo fails here. The
repository keeps them without outputs."""

from __future__ import annotations

import json
import os
import pathlib

import miditoolkit
import nbformat
import pytest
from midi_corpus import packaged_midi_files
from nbclient import NotebookClient

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[2] / "notebooks"


def execute(name: str, parameters: dict, cwd: pathlib.Path) -> nbformat.NotebookNode:
    """Runs notebooks/NAME with `parameters` injected after its parameters cell, in a fresh kernel on one
    CPU device (as on a Colab CPU runtime), working in `cwd`; a failing cell raises."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    at = next(i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", []))
    lines = [f"{key} = {value!r}" for key, value in parameters.items()]
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell("\n".join(lines), metadata={"tags": ["injected"]}))
    env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute(env=env)
    return nb


def outputs_of(nb: nbformat.NotebookNode, kind: str) -> list:
    return [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if kind in out.get("data", {})
    ]


def test_notebooks_are_stored_without_outputs():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs"
        assert any("parameters" in cell.metadata.get("tags", []) for cell in nb.cells), path.name


@pytest.mark.slow
def test_compose_notebook_runs_with_a_bundle_and_accompanies_a_piece(anticipation_bundle, tmp_path):
    """On a bundle trained with anticipation, as the bundled model is: the accompany cell adds drums and
    bass to a real piano piece and keeps its notes."""
    out = tmp_path / "compose_out"
    piano = next(path for path in packaged_midi_files() if path.name == "test17.mid")  # 6 s, 53 notes
    parameters = {
        "CHECKPOINT": str(anticipation_bundle),
        "SECONDS": 2,
        "MORE_SECONDS": 2,
        "MAX_NEW_TOKENS": 24,
        "OUT_DIR": str(out),
        "INSTALL_AUDIO": False,
        "ACCOMPANY_MIDI": str(piano),
        "ACCOMPANY_INSTRUMENTS": "drums,bass",
    }
    nb = execute("compose.ipynb", parameters, tmp_path)
    accompanied = tmp_path / "compose_out_accompanied"
    for folder in (out, tmp_path / "compose_out_more", accompanied):
        assert len(json.loads((folder / "ranking.json").read_text())["candidates"]) == 4
    assert len(outputs_of(nb, "image/png")) == 12  # a piano roll per candidate, all three rounds
    shown = "".join(
        str(out.get("data", {}).get("text/markdown", "")) for out in outputs_of(nb, "text/markdown")
    )
    assert "4 candidates, ranked by" in shown and "#4: `sample_" in shown and " new notes" in shown
    given = [note_rows(track) for track in miditoolkit.MidiFile(str(piano)).instruments]
    ranking = json.loads((accompanied / "ranking.json").read_text())["candidates"]
    assert sum(entry["new_notes"] for entry in ranking) > 0
    for entry in ranking:  # the piece's tracks as they were, then one track per family of new notes
        result = miditoolkit.MidiFile(str(accompanied / entry["midi"])).instruments
        assert [note_rows(track) for track in result[: len(given)]] == given
        assert {track.name for track in result[len(given) :]} <= {"accompany: drums", "accompany: bass"}
        assert sum(len(track.notes) for track in result[len(given) :]) == entry["new_notes"]


def note_rows(track: miditoolkit.Instrument) -> list[tuple[int, int, int, int]]:
    return [(n.pitch, n.start, n.end, n.velocity) for n in track.notes]


@pytest.mark.slow
def test_train_notebook_runs_small_on_cpu(tmp_path):
    parameters = {
        "CONFIG": "tiny",
        "STEPS": 6,
        "LIMIT": 12,
        "WORKDIR": str(tmp_path / "run"),
        "DATA_DIR": str(tmp_path / "tfds"),
        "OVERRIDES": [
            "model.d_model=32",
            "model.context=64",
            "train.log_every=2",
            "train.eval_batches=1",
            "sample.seconds=2",
            "sample.max_new_tokens=24",
            "critic.steps=4",
            "critic.batch=4",
        ],
        "FAKES": 4,
        "EVAL_SAMPLES": 1,
        "EVAL_PIECES": 2,
        "COMPOSE_SECONDS": 2,
        "INSTALL_AUDIO": False,
    }
    nb = execute("train.ipynb", parameters, tmp_path)
    text = "".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
    )
    assert "tokens/s, MFU" in text and "held-out ROC AUC" in text
    assert (tmp_path / "run" / "bundle" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "samples" / "ranking.json").is_file()
