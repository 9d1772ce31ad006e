"""Datasets in a bucket (`--data-dir gs://...`): uploaded whole by `prepare`, read through a local copy.

TFDS writes and ArrayRecord reads shards through local file handles only, so a bucket dataset is built in
a local folder and uploaded, and each reading host copies the one dataset it reads into its cache
(`MUSENET_JAX_CACHE`, default `~/.cache/musenet_jax`), once: a later read copies only files whose size
changed, and drops files the bucket no longer has. The upload goes in an order that keeps readers safe:
the old dataset's completion markers go first and the new ones last, so an interrupted upload is never
read as a dataset, and `prepare` redoes it.
"""

from __future__ import annotations

import os
import pathlib

from etils import epath

from musenet_jax.storage import files_under, is_url, relative_name

BUILD_INPUTS = "build_inputs.json"  # what a build read: its presence marks a finished, reusable dataset
METADATA = "metadata.json"  # per version folder: the dataset's encoding; readers need it


def cache_root() -> pathlib.Path:
    """Where bucket datasets and corpus downloads are copied on this host."""
    return pathlib.Path(os.environ.get("MUSENET_JAX_CACHE", pathlib.Path.home() / ".cache" / "musenet_jax"))


# (bucket data dir, source) -> the local data dir holding its copy, brought up to date once per process:
# a `train` reads labels, train and validation splits and note facts, and lists the bucket once for all.
_LOCAL_COPIES: dict[tuple[str, str], str] = {}


def local_data_dir(data_dir: str, source: str) -> str:
    """`data_dir` itself when local; for a bucket URL, a local copy of its `musenet_midi/<source>` folder
    (made or brought up to date by this process's first call) and the data dir holding it."""
    if not is_url(data_dir):
        return data_dir
    if (data_dir, source) not in _LOCAL_COPIES:
        _LOCAL_COPIES[(data_dir, source)] = _synced_copy(data_dir, source)
    return _LOCAL_COPIES[(data_dir, source)]


def _synced_copy(data_dir: str, source: str) -> str:
    local_root = cache_root() / "datasets" / data_dir.replace("://", "/", 1).rstrip("/")
    remote = epath.Path(data_dir) / "musenet_midi" / source
    local = local_root / "musenet_midi" / source
    wanted = {relative_name(f, remote): f for f in files_under(remote)} if remote.exists() else {}
    for name, file in wanted.items():
        target = local / name
        if target.is_file() and target.stat().st_size == file.stat().length:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.part")
        file.copy(epath.Path(partial), overwrite=True)
        partial.replace(target)  # whole files only, also with two processes of one host copying
    if local.is_dir():
        for stale in [p for p in local.rglob("*") if p.is_file() and str(p.relative_to(local)) not in wanted]:
            stale.unlink(missing_ok=True)
    return str(local_root)


def upload_dataset(staged: os.PathLike, folder: epath.Path) -> None:
    """Puts a finished local build `staged` at the bucket folder `folder` (replacing what is there)."""
    staged = pathlib.Path(staged)
    _LOCAL_COPIES.clear()  # a copy this process made is out of date now
    (folder / BUILD_INPUTS).unlink(missing_ok=True)  # an interrupted upload is never taken as reusable
    old = files_under(folder) if folder.exists() else []
    for marker in [f for f in old if f.name == METADATA]:
        marker.unlink()  # readers refuse a dataset without metadata rather than read a half-replaced one
    files = sorted(
        (p for p in staged.rglob("*") if p.is_file()),
        key=lambda p: (p.name == BUILD_INPUTS, p.name == METADATA, str(p)),
    )
    for file in files:
        target = folder / str(file.relative_to(staged))
        target.parent.mkdir(parents=True, exist_ok=True)
        epath.Path(file).copy(target, overwrite=True)
    kept = {str(p.relative_to(staged)) for p in files}
    for stale in old:
        if relative_name(stale, folder) not in kept and stale.exists():
            stale.unlink()  # the previous build's shards
