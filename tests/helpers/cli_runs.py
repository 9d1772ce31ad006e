"""Running `musenet-jax` in-process for the fault-injection tests, and what they check of its output."""

from __future__ import annotations

import contextlib
import pathlib
import signal
import subprocess
from collections.abc import Iterator

import pytest

from musenet_jax.cli.main import main


def ctrl_c_as_at_a_terminal() -> None:
    """`preexec_fn` of a CLI subprocess a test sends Ctrl-C: SIGINT at its default, as a terminal's foreground
    job has it. A worker started in the background by a non-interactive shell ignores SIGINT, its children
    inherit that, and Python then installs no KeyboardInterrupt handler: the Ctrl-C would never arrive."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of one command run in this process."""
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str, command: str) -> str:
    """The command's one error line; fails the test on a second one or on a traceback."""
    lines = [line for line in err.splitlines() if line.startswith(f"musenet-jax {command}: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


@contextlib.contextmanager
def tmpfs(path: pathlib.Path, size: str) -> Iterator[pathlib.Path]:
    """A real, small file system at `path` (a real full disk); skips the test where mounting is not
    permitted."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
