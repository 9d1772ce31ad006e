"""outputs.py: what the tool wrote is recognised by its manifest and replaced; anything else of a name it
would write is the user's and refused; a failed write moves nothing in."""

from __future__ import annotations

import re

import pytest

from musenet_jax.errors import UserError
from musenet_jax.outputs import MANIFEST, refuse_to_overwrite, remove_earlier, staged_into

PIECE = re.compile(r"^piece_\d+\.txt$")


def _write(folder, names: dict[str, str]) -> None:
    with staged_into(folder, "test", "--out") as stage:
        for name, text in names.items():
            (stage / name).write_text(text)


def test_own_files_are_replaced_and_removed_and_a_users_are_not(tmp_path):
    _write(tmp_path, {"piece_0.txt": "a", "piece_1.txt": "b"})
    (tmp_path / "notes.txt").write_text("mine")
    refuse_to_overwrite(tmp_path, ["piece_0.txt", "piece_1.txt"], "--out")  # its own: no complaint
    _write(tmp_path, {"piece_0.txt": "c"})
    assert remove_earlier(tmp_path, "test", PIECE, keep=["piece_0.txt"]) == ["piece_1.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST, "notes.txt", "piece_0.txt"]
    assert (tmp_path / "piece_0.txt").read_text() == "c" and (tmp_path / "notes.txt").read_text() == "mine"

    (tmp_path / "piece_0.txt").write_text("edited")  # changed since: the user's now
    with pytest.raises(UserError, match=r"piece_0.txt exists and was not written by musenet-jax"):
        refuse_to_overwrite(tmp_path, ["piece_0.txt"], "--out")
    assert remove_earlier(tmp_path, "test", PIECE) == []
    assert (tmp_path / "piece_0.txt").read_text() == "edited"


def test_a_failed_write_moves_nothing_in(tmp_path):
    with pytest.raises(OSError), staged_into(tmp_path, "test", "--out") as stage:
        (stage / "piece_0.txt").write_text("half")
        raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []  # no partial file, no staging folder, no manifest


DAMAGED = ["{not json", '{"files": {"../escape": {"sha256": "x"}}}', '{"files": [1]}', '{"files": {"a": 1}}']


@pytest.mark.parametrize("manifest", DAMAGED)
def test_a_damaged_manifest_makes_nothing_the_tools(tmp_path, manifest):
    (tmp_path / MANIFEST).write_text(manifest)
    (tmp_path / "piece_0.txt").write_text("mine")
    with pytest.raises(UserError, match="was not written by musenet-jax"):
        refuse_to_overwrite(tmp_path, ["piece_0.txt"], "--out")
    assert remove_earlier(tmp_path, "test", PIECE) == []
