"""Files the tool writes into a user's folder: written beside, moved in whole, and recognised later.

A folder that `generate`, `decode` or `critic make-fakes` writes into gets a hidden manifest,
`.musenet-jax-outputs.json`, with the sha256 of every file the tool put there. A later run may replace or
remove only those files, and only while they are unchanged: anything else of that name is the user's, and
writing over it is refused in one line. New files are first written into a hidden staging folder beside
(`.musenet-jax-partial-PID-*`), so a full disk or an interruption leaves no half-written file among the
user's; they are moved in once all are written. Folders may be bucket URLs (gs://): the manifest and the
checks go through etils epath, and staged files are copied up.

A whole folder (an exported bundle) is written into a hidden sibling instead and swapped in by renames.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import re
import secrets
import shutil
import tempfile
from collections.abc import Collection, Iterable, Iterator

from etils import epath

from musenet_jax.errors import UserError
from musenet_jax.locks import process_alive
from musenet_jax.storage import copy_folder, is_url, move_folder, write_text_whole

MANIFEST = ".musenet-jax-outputs.json"
STAGING_PREFIX = ".musenet-jax-partial-"
_STAGING = re.compile(rf"^{re.escape(STAGING_PREFIX)}(\d+)-")


def sha256_of(path: str | os.PathLike) -> str:
    """The file's sha256, hex."""
    digest = hashlib.sha256()
    with epath.Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def naming(path: str | os.PathLike) -> Iterator[None]:
    """An `OSError` raised inside without a file name (a write that hit a full disk) gets `path`, so that
    the one line the CLI prints says where."""
    try:
        yield
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        raise OSError(err.errno, err.strerror or str(err), os.fspath(path)) from err


def read_manifest(folder: str | os.PathLike) -> dict[str, dict[str, str]]:
    """File name -> {"sha256", "by"} of what the tool wrote in `folder` (empty when it wrote nothing, or
    its manifest is unreadable: then nothing there counts as the tool's)."""
    path = epath.Path(folder) / MANIFEST
    try:
        files = json.loads(path.read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(files, dict):
        return {}
    return {  # plain names in this folder only, whatever a damaged manifest says
        name: entry
        for name, entry in files.items()
        if isinstance(entry, dict) and "/" not in name and name not in ("", ".", "..")
    }


def _write_manifest(folder: epath.Path, files: dict[str, dict[str, str]]) -> None:
    text = json.dumps({"written_by": "musenet-jax", "files": dict(sorted(files.items()))}, indent=1) + "\n"
    with naming(folder / MANIFEST):
        write_text_whole(folder / MANIFEST, text)


def tool_written(folder: str | os.PathLike) -> set[str]:
    """Names in `folder` that the tool wrote and that are unchanged since."""
    out = epath.Path(folder)
    return {
        name
        for name, entry in read_manifest(out).items()
        if (out / name).is_file() and sha256_of(out / name) == entry.get("sha256")
    }


def refuse_to_overwrite(folder: str | os.PathLike, names: Iterable[str], flag: str) -> None:
    """One `UserError` for the first of `names` in `folder` that the tool did not write (or that was
    changed since): the user's file, which no output may replace."""
    out = epath.Path(folder)
    present = [name for name in names if (out / name).exists()]
    if not present:
        return
    ours = tool_written(out)
    theirs = [name for name in present if name not in ours]
    if theirs:
        more = f" (and {len(theirs) - 1} more)" if len(theirs) > 1 else ""
        raise UserError(
            f"{out / theirs[0]}{more} exists and was not written by musenet-jax (or was changed since); "
            f"remove it or choose another {flag}"
        )


def remove_earlier(
    folder: str | os.PathLike, by: str, pattern: re.Pattern[str], keep: Collection[str] = ()
) -> list[str]:
    """Removes the files matching `pattern` (but not those in `keep`) that an earlier `by` command wrote
    in `folder` and that are unchanged; returns their names. Files the user wrote or changed stay."""
    out = epath.Path(folder)
    manifest = read_manifest(out)
    ours = tool_written(out) - set(keep)
    removed = sorted(n for n, e in manifest.items() if n in ours and e.get("by") == by and pattern.match(n))
    for name in removed:
        (out / name).unlink()
        del manifest[name]
    if removed:
        _write_manifest(out, manifest)
    return removed


def _remove_stale_staging(folder: pathlib.Path) -> None:
    """Staging folders left by a killed run (its process is gone)."""
    for child in folder.iterdir():
        found = _STAGING.match(child.name)
        if found and child.is_dir() and not process_alive(int(found.group(1))):
            shutil.rmtree(child, ignore_errors=True)


@contextlib.contextmanager
def staged_into(folder: str | os.PathLike, by: str, flag: str) -> Iterator[pathlib.Path]:
    """A local folder to write new outputs into; when the block ends without an error, every file in it
    is recorded in the manifest as written by `by` and moved into `folder`, replacing only the tool's own
    unchanged files of those names (a user's file of such a name is `refuse_to_overwrite`'s one line,
    `flag` saying where else to write). On an error nothing is moved and the staged files are removed."""
    out = epath.Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    if is_url(out):
        context: contextlib.AbstractContextManager[str] = tempfile.TemporaryDirectory(prefix="musenet-")
    else:
        _remove_stale_staging(pathlib.Path(out))
        context = _local_staging(pathlib.Path(out))
    with context as staging:
        stage = pathlib.Path(staging)
        yield stage
        files = sorted(stage.iterdir())
        refuse_to_overwrite(out, [file.name for file in files], flag)  # a file may have appeared since
        manifest = read_manifest(out)
        for file in files:
            manifest[file.name] = {"sha256": sha256_of(file), "by": by}
        _write_manifest(out, manifest)  # first: a move cut short leaves files still known as the tool's
        for file in files:
            target = out / file.name
            if is_url(out):
                with naming(target):
                    epath.Path(file).copy(target, overwrite=True)
            else:
                os.replace(file, target)


@contextlib.contextmanager
def _local_staging(folder: pathlib.Path) -> Iterator[str]:
    staging = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=folder)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _aside(folder: epath.Path, kind: str) -> epath.Path:
    """A hidden sibling of `folder` for this process (`.NAME.KIND-PID-RANDOM`), on the same file system."""
    return folder.parent / f".{folder.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


@contextlib.contextmanager
def folder_staged_beside(folder: epath.Path) -> Iterator[epath.Path]:
    """A new hidden folder beside `folder` to write a whole new `folder` into (then `swap_in`); removed
    when the block ends, so a failed write leaves `folder` as it was. Those of killed writers go too."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(folder)
    staging = _aside(folder, "staged")
    staging.mkdir()
    try:
        yield staging
    finally:
        if staging.exists():
            staging.rmtree()


def _remove_stale(folder: epath.Path) -> None:
    """Staging and set-aside folders of writers of `folder` whose process is gone (killed midway); an old
    folder set aside by a writer killed before it renamed the new one in is put back."""
    if is_url(folder):
        return  # a bucket's are left: no process to ask about
    pattern = re.compile(rf"^\.{re.escape(folder.name)}\.(staged|replaced)-(\d+)-[0-9a-f]+$")
    for child in sorted(folder.parent.iterdir()):
        found = pattern.match(child.name)
        if not (found and child.is_dir()) or process_alive(int(found.group(2))):
            continue
        if found.group(1) == "replaced" and not folder.exists():
            move_folder(child, folder)
        else:
            child.rmtree()


def swap_in(staging: epath.Path, folder: epath.Path) -> None:
    """Puts the staged folder where `folder` was: the old one renamed aside, the new one renamed in, the
    old one removed (its hidden files, such as a `.gitkeep`, carried over)."""
    if not folder.exists():
        move_folder(staging, folder)
        return
    for hidden in folder.iterdir():
        if hidden.name.startswith("."):
            if hidden.is_dir():
                copy_folder(hidden, staging / hidden.name)
            else:
                hidden.copy(staging / hidden.name)
    old = _aside(folder, "replaced")
    move_folder(folder, old)
    move_folder(staging, folder)
    old.rmtree()
