"""Paths that may be bucket URLs (gs://BUCKET/...): the one place that knows how buckets differ from folders.

Work directories, data dirs, bundles and outputs are `etils.epath` paths, so `gs://` goes through gcsfs
(and Orbax's arrays through TensorStore) with no mounted filesystem. Buckets differ from folders in three
ways that the callers must not each rediscover: an object cannot be appended to (a log is rewritten
whole), a folder cannot be renamed (it is copied file by file, then deleted), and `Path.resolve()` would
turn a URL into a local path (URLs are kept as given).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import urllib.parse
from typing import Any

from etils import epath

from musenet_jax.errors import UserError

GCS_ENDPOINT = "https://storage.googleapis.com"
REACH_TIMEOUT_S = 5.0  # gcsfs retries an unreachable endpoint for about a minute; this says so at once


def is_url(path: str | os.PathLike) -> bool:
    """True for bucket URLs such as gs://b/x (anything with a scheme), False for local paths."""
    return "://" in os.fspath(path)


def gcs_credentials_hint() -> str:
    """What to do about Google Cloud credentials, from a cheap look (no metadata-server probe, which
    takes seconds off a VM): nothing when a credentials file is there or an emulator is used."""
    if os.environ.get("STORAGE_EMULATOR_HOST") or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return ""
    config = os.environ.get("CLOUDSDK_CONFIG") or os.path.join(os.path.expanduser("~"), ".config", "gcloud")
    if os.path.isfile(os.path.join(config, "application_default_credentials.json")):
        return ""
    return (
        "; no Google Cloud credentials file was found: off a Google Cloud VM run "
        "`gcloud auth application-default login` (or set GOOGLE_APPLICATION_CREDENTIALS)"
    )


def check_bucket_reachable(url: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """For a gs:// URL, one connection to Cloud Storage (or $STORAGE_EMULATOR_HOST) within `timeout_s`:
    without network the user gets one line now instead of a minute of retries and their tracebacks."""
    if not url.startswith("gs://"):
        return
    endpoint = os.environ.get("STORAGE_EMULATOR_HOST") or GCS_ENDPOINT
    parts = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise UserError(
            f"{url}: cannot reach Google Cloud Storage at {host}:{port} ({reason}); check the network"
            f"{' and STORAGE_EMULATOR_HOST' if parts.hostname != 'storage.googleapis.com' else ''}"
            f"{gcs_credentials_hint()}, or use a local path"
        ) from None


def as_path(path: str | os.PathLike) -> epath.Path:
    """An `epath.Path`: a local path made absolute, a URL kept as given."""
    return epath.Path(path) if is_url(path) else epath.Path(pathlib.Path(path).resolve())


def files_under(folder: epath.Path) -> list[epath.Path]:
    """Every file below `folder`, walked one level at a time (bucket globs refuse `**`)."""
    found: list[epath.Path] = []
    pending = [folder]
    while pending:
        for child in sorted(pending.pop().iterdir()):
            (pending if child.is_dir() else found).append(child)
    return found


def relative_name(file: os.PathLike, folder: os.PathLike) -> str:
    """`file`'s path below `folder` (`relative_to` for local paths and bucket URLs alike)."""
    return os.fspath(file)[len(os.fspath(folder)) :].lstrip("/")


def copy_folder(source: epath.Path, target: epath.Path) -> None:
    """Copies every file of `source` into `target` (created), keeping relative paths."""
    for file in files_under(source):
        destination = target / relative_name(file, source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        file.copy(destination, overwrite=True)


def move_folder(source: epath.Path, target: epath.Path) -> None:
    """Moves a folder: a rename locally; in a bucket, a copy of every file and then the deletion of the
    source, so that an interruption leaves both copies rather than neither."""
    if not is_url(source):
        pathlib.Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(os.fspath(source), os.fspath(target))
        return
    copy_folder(source, target)
    source.rmtree()


def save_figure(fig: Any, out: str | os.PathLike) -> None:
    """Writes a matplotlib figure as PNG to a local path or a bucket URL (its folder created)."""
    path = epath.Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        fig.savefig(f, format="png")


def read_json(path: str | os.PathLike, remedy: str) -> Any:
    """A JSON file's content; a damaged one (cut short, edited by hand) is one line with the file, where it
    stops parsing and `remedy`, what to do about it."""
    path = epath.Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err}); {remedy}") from None


def write_text_whole(path: epath.Path, text: str) -> None:
    """Writes `path` so that a reader sees the old text or the new, never half: locally a temporary file
    renamed over it; in a bucket a single object write, which is atomic already."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_url(path):
        path.write_text(text)
        return
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def bucket_support_missing(err: ImportError) -> str | None:
    """The one line to print when a bucket path was given without its filesystem package installed."""
    text = str(err)
    if "gcsfs" in text or "fsspec" in text:
        return f"{text.strip()}; bucket paths (gs://) need it: pip install 'musenet-jax[gcs]'"
    return None
