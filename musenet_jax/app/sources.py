"""Where a `--checkpoint` points: one resolver for every command that loads a model.

A source is a training run's work directory (it has `checkpoints/`), an exported bundle (it has
`bundle.json`), either one on a bucket (`gs://...`, read through etils epath like a local path), a bundle
on the Hugging Face Hub (`hf://ORG/NAME[@REVISION]`, downloaded once into the Hub's own cache; with
HF_HUB_OFFLINE=1 only the cache is read), or nothing: the bundled model shipped in the package
(`musenet_jax/bundled/`, or the folder named by the MUSENET_BUNDLED_MODEL environment variable).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Literal

import huggingface_hub
from etils import epath
from huggingface_hub import errors as hf_errors

from musenet_jax.errors import UserError
from musenet_jax.storage import check_bucket_reachable, gcs_credentials_hint, is_url

BUNDLE_FILE = "bundle.json"  # marks a folder as an exported bundle (format and provenance)
RUN_MARKER = "checkpoints"  # a training run's work directory holds its checkpoints here
HF_SCHEME = "hf://"
BUNDLED_ENV = "MUSENET_BUNDLED_MODEL"  # points the bundled model elsewhere (tests, a custom install)
BUNDLED_NAME = "bundled"  # `--checkpoint bundled` / `--init-from bundled`: the package's model


@dataclasses.dataclass(frozen=True)
class Source:
    """A resolved `--checkpoint`: what the user gave, the folder it names (local path or bucket URL)
    and whether that folder is a training run or a bundle."""

    given: str
    path: str
    kind: Literal["run", "bundle"]


def bundled_model_dir() -> pathlib.Path:
    """The bundled model's folder: $MUSENET_BUNDLED_MODEL, else `musenet_jax/bundled` in the package."""
    override = os.environ.get(BUNDLED_ENV)
    if override:
        return pathlib.Path(override)
    return pathlib.Path(__file__).resolve().parent.parent / BUNDLED_NAME


def _bundled() -> Source:
    folder = bundled_model_dir()
    if not (folder / BUNDLE_FILE).is_file():
        where = f"${BUNDLED_ENV}={folder}" if os.environ.get(BUNDLED_ENV) else f"{folder}"
        raise UserError(
            f"no --checkpoint given and no bundled model is installed ({where} has no {BUNDLE_FILE}); "
            "pass --checkpoint RUN_DIR, a bundle dir or hf://ORG/NAME"
        )
    return Source(BUNDLED_NAME, str(folder), "bundle")


def _offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, when first imported)."""
    now = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return now or huggingface_hub.constants.HF_HUB_OFFLINE


def hub_snapshot(spec: str) -> str:
    """`hf://ORG/NAME[@REVISION]` -> the local folder of that snapshot in the Hugging Face cache
    (downloaded on first use; with HF_HUB_OFFLINE=1 the cache must already hold it)."""
    repo, _, revision = spec[len(HF_SCHEME) :].partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise UserError(f"{spec}: write a Hub bundle as hf://ORG/NAME or hf://ORG/NAME@REVISION")
    try:
        return huggingface_hub.snapshot_download(
            repo_id=repo, revision=revision or None, local_files_only=_offline()
        )
    except hf_errors.LocalEntryNotFoundError:
        how = "HF_HUB_OFFLINE=1 is set" if _offline() else "the Hub cannot be reached"
        raise UserError(
            f"{spec} is not in the Hugging Face cache ({huggingface_hub.constants.HF_HUB_CACHE}) and {how}; "
            "download it once with network access"
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise UserError(f"{spec}: the Hub repository has no revision {revision!r}") from None
    except (hf_errors.RepositoryNotFoundError, hf_errors.GatedRepoError):
        raise UserError(
            f"{spec}: no such Hub repository, or it is private (log in with `hf auth login`)"
        ) from None
    except hf_errors.HfHubHTTPError as err:
        raise UserError(f"{spec}: the Hub answered {str(err).splitlines()[0]}") from None


def resolve_source(source: str | os.PathLike | None) -> Source:
    """What `--checkpoint` names (see the module docstring); a source that is neither a run nor a
    bundle is one `UserError`."""
    if source is None or str(source) == BUNDLED_NAME:
        if source is not None and pathlib.Path(BUNDLED_NAME).exists():
            raise UserError(
                f"--checkpoint {BUNDLED_NAME} names the bundled model, and a folder here has that name too; "
                f"write ./{BUNDLED_NAME} for the folder"
            )
        return _bundled()
    given = str(source)
    if given.startswith(HF_SCHEME):
        folder = epath.Path(hub_snapshot(given))
    elif "://" in given:
        check_bucket_reachable(given)
        folder = epath.Path(given.rstrip("/"))
    else:
        folder = epath.Path(pathlib.Path(given))
    if (folder / BUNDLE_FILE).exists():
        return Source(given, str(folder), "bundle")
    if (folder / RUN_MARKER).exists():
        return Source(given, str(folder), "run")
    if not folder.exists():
        unreadable = " (or none that these credentials may read)" if is_url(given) else ""
        raise UserError(f"--checkpoint {given}: no such folder{unreadable}{gcs_credentials_hint()}")
    raise UserError(
        f"--checkpoint {given} is neither a training run (no {RUN_MARKER}/) nor an exported bundle "
        f"(no {BUNDLE_FILE})"
    )
