"""`export`: a loaded run (or bundle) -> a self-contained inference bundle (`app/bundle.py`), optionally
published on the Hugging Face Hub.

The bundle is written into a hidden folder beside `--out`, read back against its checksums, and only then
swapped in (the old one renamed aside, the new one renamed in, the old one removed): a full disk or a kill
midway leaves an earlier bundle as it was. Only an earlier bundle is replaced; a folder with anything of
the user's in it, or the very folder being exported, is refused in one line."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import huggingface_hub
import huggingface_hub.constants  # a submodule: `import huggingface_hub` alone does not load it
import jax
from etils import epath
from flax import nnx
from huggingface_hub import errors as hf_errors

from musenet_jax import __version__
from musenet_jax.app import bundle
from musenet_jax.app.run import Run
from musenet_jax.app.sources import BUNDLE_FILE
from musenet_jax.config import Config
from musenet_jax.critic.store import read_meta, save_critic_tensors, stored_critic_params
from musenet_jax.data.config import DataConfig
from musenet_jax.errors import UserError
from musenet_jax.model.param_files import STORE_DTYPES
from musenet_jax.outputs import folder_staged_beside, naming, swap_in
from musenet_jax.storage import is_url

EVAL_KEYS: tuple[str, ...] = ("split", "pieces", "tokens", "bits_per_token", "bits_per_token_by_kind")


@dataclasses.dataclass(frozen=True)
class ExportReport:
    out: str
    files: dict[str, int]  # relative path -> bytes
    parameters: int
    dtype: str
    critic_auc: float | None
    pairings_counted: bool  # the note facts say which families each composer's training pieces carry

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())

    def describe(self) -> str:
        critic = "no critic" if self.critic_auc is None else f"critic (held-out AUC {self.critic_auc:.3f})"
        size = f"{self.total_bytes / 1e6:.1f} MB in {len(self.files)} files"
        line = f"wrote {self.out}: {size}; {self.parameters:,} parameters in {self.dtype}, {critic}"
        if not self.pairings_counted:
            line += (
                "; its note facts do not count which instruments each composer's training pieces carry "
                "(recorded before they were, or absent), so `generate` with it cannot say when a requested "
                "pairing is rare"
            )
        return line


def read_eval_report(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON `musenet-jax eval --json` printed, checked to be one."""
    try:
        report = json.loads(epath.Path(path).read_text())
    except ValueError as err:
        raise UserError(f"--eval-json {path} is not JSON ({err})") from None
    missing = [k for k in EVAL_KEYS if k not in report] if isinstance(report, dict) else list(EVAL_KEYS)
    if missing:
        raise UserError(
            f"--eval-json {path} is not the output of `musenet-jax eval --json` (no {', '.join(missing)})"
        )
    return report


def _refuse_own_source(run: Run, out: epath.Path) -> None:
    """Replacing the folder being read (or one holding it) would lose what is being exported."""
    source = epath.Path(str(run.workdir))
    if is_url(out) != is_url(source):
        return
    if is_url(out):
        same = str(out).rstrip("/") == str(source).rstrip("/")
        inside = str(source).startswith(str(out).rstrip("/") + "/")
    else:
        mine, theirs = pathlib.Path(out).resolve(), pathlib.Path(source).resolve()
        same, inside = mine == theirs, mine in theirs.parents
    if same or inside:
        what = "is" if same else "holds"
        raise UserError(
            f"--out {out} {what} the --checkpoint being exported ({run.source or run.workdir}); "
            "export to another folder, then replace the old one with it if you mean to"
        )


def _check_replaceable(out: epath.Path) -> None:
    """A new or empty folder, or an earlier bundle with nothing of the user's in it; else one line."""
    if not out.exists() or not any(not p.name.startswith(".") for p in out.iterdir()):
        return
    if not (out / BUNDLE_FILE).exists():
        raise UserError(f"--out {out} holds files that are not a bundle; choose a new or empty folder")
    try:
        bundle.read_info(out)
    except (ValueError, KeyError, TypeError):
        raise UserError(
            f"--out {out}: its {BUNDLE_FILE} is not one musenet-jax wrote; choose a new or empty folder"
        ) from None
    foreign = bundle.foreign_files(out)
    if foreign:
        raise UserError(
            f"--out {out} is an earlier bundle, but {out / foreign[0]} in it is not a bundle's file; "
            "move it out of the folder or choose another --out"
        )


def export_bundle(
    run: Run,
    out: str | os.PathLike,
    *,
    dtype: str = "float32",
    eval_report: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> ExportReport:
    """Writes `run` as a bundle in `out`: its parameters in `dtype`, config, vocabulary, note facts (with
    the composer/instrument pairing counts `generate`'s rare-pairing line reads), its critic when one was
    trained, a model card (with `eval_report`'s scores when given) and checksums."""
    if dtype not in STORE_DTYPES:
        raise UserError(f"--dtype {dtype}: valid: {', '.join(STORE_DTYPES)}")
    folder = epath.Path(str(out))
    _refuse_own_source(run, folder)
    _check_replaceable(folder)
    params = jax.device_get(nnx.to_pure_dict(nnx.state(run.model, nnx.Param)))
    count = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
    critic_meta = read_meta(run.workdir)
    if critic_meta is not None and critic_meta.vocab_fingerprint != run.tokenizer.vocab.fingerprint():
        raise UserError(f"the critic in {run.workdir} was trained with another vocabulary; retrain it")
    info = bundle.BundleInfo(
        bundle.FORMAT, bundle.FORMAT_VERSION, run.step, dtype, count, run.source or run.workdir, __version__
    )
    cfg = portable_config(run.cfg)
    auc = None if critic_meta is None else critic_meta.heldout_auc
    card = bundle.model_card(cfg, info, name=name or folder.name, eval_report=eval_report, critic_auc=auc)
    with folder_staged_beside(folder) as staging, naming(folder):
        if critic_meta is not None:
            critic_params = jax.device_get(stored_critic_params(run.workdir, run.model, critic_meta))
            save_critic_tensors(staging, critic_params, critic_meta, dtype)
        bundle.write_bundle(
            staging,
            cfg=cfg,
            tokenizer=run.tokenizer,
            params=params,
            info=info,
            note_facts=run.note_facts,
            card=card,
        )
        bundle.verify_checksums(staging, str(folder))  # read back whole before it replaces anything
        swap_in(staging, folder)
    counted = run.note_facts is not None and bool(run.note_facts.composer_family_pieces)
    return ExportReport(str(folder), bundle_files(folder), count, dtype, auc, counted)


def portable_config(cfg: Config) -> Config:
    """The run's config without the exporting machine's dataset paths: a bundle is read on other machines,
    where they mean nothing (`--data-dir` and `--set data.midi_dir=...` name the reader's own)."""
    defaults = DataConfig()
    data = dataclasses.replace(cfg.data, data_dir=defaults.data_dir, midi_dir=defaults.midi_dir)
    return cfg.replace(data=data)


def bundle_files(folder: epath.Path) -> dict[str, int]:
    """Relative path -> bytes of every file of a bundle (two levels: the critic's folder)."""
    found = {}
    for path in sorted(folder.iterdir()):
        for file in sorted(path.iterdir()) if path.is_dir() else [path]:
            found[str(file.relative_to(folder))] = file.stat().length
    return found


def push_to_hub(folder: str | os.PathLike, repo_id: str, *, private: bool = False) -> str:
    """Uploads a bundle folder to the Hub repository `repo_id` (created if absent); returns its URL.
    Authentication is huggingface_hub's own (`hf auth login` or HF_TOKEN)."""
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise UserError("--push-to-hub needs the network, and HF_HUB_OFFLINE is set")
    api = huggingface_hub.HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="musenet-jax export")
    except hf_errors.HfHubHTTPError as err:
        raise UserError(f"--push-to-hub {repo_id}: the Hub answered {str(err).splitlines()[0]}") from None
    return str(url)
