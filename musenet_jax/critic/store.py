"""The trained critic inside a run's work directory: `W/critic/params` (Orbax) and `W/critic/critic.json`;
inside an exported bundle: `B/critic/params.safetensors` and the same `critic.json`.

With the trunk frozen only the critic head is stored; fine-tuned, the whole parameter tree is. Sampling
keeps using the language model's own parameters; the critic gets its own model object built from
them with the stored parameters laid over, so fine-tuning the trunk never changes what is generated.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from musenet_jax.errors import UserError
from musenet_jax.model.param_files import load_tensors, save_tensors
from musenet_jax.storage import as_path

CRITIC_SUBDIR = "critic"
TENSORS_FILE = "params.safetensors"  # a bundle's critic (an Orbax folder `params` is a run's)


@dataclasses.dataclass(frozen=True)
class CriticMeta:
    """How the stored critic was trained and how well it did on held-out data."""

    finetune_trunk: bool
    steps: int
    heldout_auc: float
    heldout_real: int  # held-out windows of real pieces
    heldout_fake: int
    base_step: int  # the language-model checkpoint it was trained on
    vocab_fingerprint: str


def critic_dir(workdir: str | pathlib.Path) -> epath.Path:
    """`W/critic`: absolute for local paths, bucket URLs (gs://) as given."""
    return as_path(workdir) / CRITIC_SUBDIR


def save_critic(workdir: str | pathlib.Path, params: dict[str, Any], meta: CriticMeta) -> pathlib.Path:
    """Writes the critic's parameters (a subtree of the model's pure dict) and its meta, replacing any."""
    folder = critic_dir(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(folder / "params", params, force=True)
    checkpointer.wait_until_finished()
    (folder / "critic.json").write_text(json.dumps(dataclasses.asdict(meta), indent=2) + "\n")
    return folder


def read_meta(workdir: str | pathlib.Path) -> CriticMeta | None:
    path = critic_dir(workdir) / "critic.json"
    if not path.is_file():
        return None
    return CriticMeta(**json.loads(path.read_text()))


def load_critic(workdir: str | pathlib.Path, model: Any, fingerprint: str) -> tuple[Any, CriticMeta] | None:
    """(a model whose critic head, and trunk when fine-tuned, are the trained ones, meta), or None when
    no critic was trained in `workdir`."""
    meta = read_meta(workdir)
    if meta is None:
        return None
    if meta.vocab_fingerprint != fingerprint:
        raise UserError(
            f"the critic in {critic_dir(workdir)} was trained with another vocabulary; retrain it"
        )
    graphdef, state = nnx.split(model)
    restored = stored_critic_params(workdir, model, meta)
    merged = nnx.to_pure_dict(state)
    _overlay(merged, restored)
    nnx.replace_by_pure_dict(state, merged)
    return nnx.merge(graphdef, state), meta


def stored_critic_params(workdir: str | pathlib.Path, model: Any, meta: CriticMeta) -> dict[str, Any]:
    """The critic's parameters as stored (the head, or the whole tree when the trunk was fine-tuned), from
    a run's Orbax folder or a bundle's safetensors file, shaped and placed like `model`'s."""
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    wanted = params if meta.finetune_trunk else {"critic": params["critic"]}
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), wanted)
    folder = critic_dir(workdir)
    if (folder / "params").is_dir():
        return ocp.StandardCheckpointer().restore(folder / "params", abstract)
    return load_tensors(folder / TENSORS_FILE, abstract)


def save_critic_tensors(
    out_dir: str | pathlib.Path, params: dict[str, Any], meta: CriticMeta, dtype: str
) -> epath.Path:
    """Writes a critic in the bundle layout (`OUT/critic/params.safetensors`, `critic.json`)."""
    folder = critic_dir(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors(folder / TENSORS_FILE, params, dtype)
    (folder / "critic.json").write_text(json.dumps(dataclasses.asdict(meta), indent=2) + "\n")
    return folder


def _overlay(target: dict[str, Any], source: dict[str, Any]) -> None:
    for key, value in source.items():
        if isinstance(value, dict):
            _overlay(target[key], value)
        else:
            target[key] = value
