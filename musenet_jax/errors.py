"""The one exception type that reaches the user as a single line instead of a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user (config key, composer, file...): the CLI prints it as one line, exit 2."""


def closest_first(name: str, choices: Iterable[str]) -> list[str]:
    """All `choices`, the ones most similar to `name` first, so error messages lead with the likely fix."""
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=len(choices), cutoff=0.0)
    return close + [c for c in choices if c not in close]


def unknown_choice(kind: str, name: str, choices: Iterable[str]) -> UserError:
    """`unknown composer 'bahc'; valid: bach, ...` with the closest names first."""
    return UserError(f"unknown {kind} {name!r}; valid: {', '.join(closest_first(name, choices))}")


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception as one line for a report that records failures and goes on (type and first line)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:limit]
