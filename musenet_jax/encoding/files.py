"""Which files a list of command-line paths names: MIDI files as given, folders searched for them."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Sequence

from musenet_jax.encoding.midi_io import shown
from musenet_jax.errors import UserError

MIDI_SUFFIXES = (".mid", ".midi")


def midi_files(paths: Sequence[str], say: Callable[[str], None] = print) -> list[pathlib.Path]:
    """Files as given, folders expanded to the MIDI files below them (any suffix case), in a stable order.
    Entries that are not folders are kept even when unreadable, so that each gets its reason; a folder
    with no MIDI file below it is said."""
    found: list[pathlib.Path] = []
    empty_folders: list[str] = []
    for name in paths:
        path = pathlib.Path(name)
        if path.is_dir():
            inside = sorted(
                p for p in path.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and not p.is_dir()
            )
            if not inside:
                empty_folders.append(shown(path))
            found += inside
        elif path.exists() or path.is_symlink():
            found.append(path)
        else:
            raise UserError(f"{shown(path)}: no such file or folder")
    if not found:
        raise UserError(f"no MIDI files (.mid, .midi) in {', '.join(map(shown, map(pathlib.Path, paths)))}")
    for folder in empty_folders:
        say(f"{folder} is a folder with no MIDI files (.mid, .midi) below it")
    return found
