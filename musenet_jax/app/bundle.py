"""The exported inference bundle: one folder that composes without the training run or its dataset.

    bundle.json            format, version, step, parameter dtype, where it came from, and the sha256 of
                           every other file but README.md (checked whenever the bundle is loaded)
    config.json            the run's resolved config (what the parameters mean, how to sample)
    vocab.json             the vocabulary's tokens and fingerprint (a bundle of another encoding is refused)
    model.safetensors      the model's parameters (float32 or bfloat16; loaded as the model's float32)
    note_facts.json        the training split's note facts, for the sampler's rules (when the run has them)
    critic/                the inner critic (params.safetensors, critic.json), when one was trained
    README.md              the model card, with the Hugging Face YAML header

Every file is read and written through etils epath, so a bundle on a bucket reads like a local one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from etils import epath

from musenet_jax import __version__
from musenet_jax.app.sources import BUNDLE_FILE
from musenet_jax.config import Config, config_from_dict
from musenet_jax.data.note_facts import FACTS_FILE, NoteFacts
from musenet_jax.encoding.tokenizer import Tokenizer
from musenet_jax.errors import UserError
from musenet_jax.eval.report import format_table
from musenet_jax.model.param_files import load_tensors, save_tensors
from musenet_jax.outputs import sha256_of
from musenet_jax.storage import files_under, read_json, relative_name

FORMAT = "musenet-jax-bundle"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
DAMAGED_BUNDLE = "the bundle is damaged: export it again, or restore the file"
PARAMS_FILE = "model.safetensors"
CARD_FILE = "README.md"
CHECKSUMS_KEY = "sha256"  # bundle.json: relative path -> sha256 of each file that makes the model
UNCHECKED = (CARD_FILE, BUNDLE_FILE)  # the card may be edited (on the Hub too); bundle.json holds the sums
# Every file an export writes (a bundle from before checksums is recognised by these names).
OWN_FILES = frozenset(
    {PARAMS_FILE, CONFIG_FILE, VOCAB_FILE, FACTS_FILE, CARD_FILE, BUNDLE_FILE}
    | {"critic/params.safetensors", "critic/critic.json"}
)
# Hugging Face dataset tags for the model card, by `data.source`.
DATASET_TAGS: dict[str, str] = {"music21": "music21-corpus", "midi_dir": "own-midi-files"}


@dataclasses.dataclass(frozen=True)
class BundleInfo:
    """`bundle.json`: what the folder is and where its parameters came from."""

    format: str
    format_version: int
    step: int
    dtype: str
    parameters: int
    source: str  # the --checkpoint it was exported from
    musenet_jax_version: str


def read_info(folder: str | epath.PathLike) -> BundleInfo:
    path = epath.Path(folder) / BUNDLE_FILE
    data = read_json(path, DAMAGED_BUNDLE)
    if data.get("format") != FORMAT or int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise UserError(
            f"{path} is a bundle this musenet-jax ({__version__}) cannot read (format "
            f"{data.get('format')!r} version {data.get('format_version')}); upgrade musenet-jax"
        )
    return BundleInfo(**{f.name: data[f.name] for f in dataclasses.fields(BundleInfo)})


def _visible_files(folder: epath.Path) -> list[str]:
    """Relative paths of the files below `folder`, hidden ones (a `.gitkeep`, the Hub's `.gitattributes`)
    left out: they are not the bundle's."""
    names = [relative_name(file, folder) for file in files_under(folder)]
    return [n for n in names if not any(part.startswith(".") for part in n.split("/"))]


def file_checksums(folder: str | epath.PathLike) -> dict[str, str]:
    """Relative path -> sha256 of every file of the bundle in `folder` that checksums cover."""
    root = epath.Path(folder)
    return {name: sha256_of(root / name) for name in _visible_files(root) if name not in UNCHECKED}


def _recorded_checksums(folder: epath.Path) -> dict[str, str] | None:
    data = json.loads((folder / BUNDLE_FILE).read_text())
    recorded = data.get(CHECKSUMS_KEY) if isinstance(data, dict) else None
    return recorded if isinstance(recorded, dict) else None


def verify_checksums(folder: str | epath.PathLike, given: str) -> None:
    """Every file bundle.json has a sha256 for is there and has it; else one `UserError` naming the file
    and how to get a good copy. A bundle exported before checksums (none recorded) loads as it is."""
    root = epath.Path(folder)
    recorded = _recorded_checksums(root)
    if recorded is None:
        return
    if given.startswith("hf://"):
        fix = f"download it again (remove {given} from the Hugging Face cache first)"
    elif given == "bundled":
        fix = "reinstall musenet-jax"
    else:
        fix = "export the bundle again (or copy or download it again)"
    for name, digest in sorted(recorded.items()):
        path = root / name
        if not path.is_file():
            raise UserError(f"{path} is missing from the bundle {given} ({BUNDLE_FILE} lists it); {fix}")
        if sha256_of(path) != digest:
            raise UserError(
                f"{path} is damaged or was changed: its sha256 is not the one {BUNDLE_FILE} records; {fix}"
            )


def foreign_files(folder: str | epath.PathLike) -> list[str]:
    """Files in a bundle's folder that no export wrote there (hidden ones aside)."""
    root = epath.Path(folder)
    own = set(OWN_FILES) | set(_recorded_checksums(root) or {})
    return [name for name in _visible_files(root) if name not in own]


def read_config(folder: str | epath.PathLike) -> Config:
    data = read_json(epath.Path(folder) / CONFIG_FILE, DAMAGED_BUNDLE)
    return config_from_dict(data, name=data.get("name", "custom"))


def check_vocabulary(folder: str | epath.PathLike, tokenizer: Tokenizer, given: str) -> None:
    """The bundle's tokens must mean what `tokenizer`'s mean: one line when they do not."""
    saved = read_json(epath.Path(folder) / VOCAB_FILE, DAMAGED_BUNDLE)
    mine = tokenizer.vocab.fingerprint()
    if saved["fingerprint"] != mine:
        raise UserError(
            f"{given} was exported with another encoding (vocabulary fingerprint "
            f"{saved['fingerprint'][:12]}..., its config gives {mine[:12]}... in musenet-jax {__version__}); "
            "use the musenet-jax version that exported it"
        )


def load_params(folder: str | epath.PathLike, abstract_params: Mapping[str, Any]) -> dict[str, Any]:
    """The model's parameters, as float32 on the abstract tree's shardings."""
    return load_tensors(epath.Path(folder) / PARAMS_FILE, abstract_params)


def write_bundle(
    out: str | epath.PathLike,
    *,
    cfg: Config,
    tokenizer: Tokenizer,
    params: Mapping[str, Any],
    info: BundleInfo,
    note_facts: NoteFacts | None,
    card: str,
) -> list[str]:
    """Writes every file but the critic's (see `critic.store.save_critic_tensors`, called first) and, last,
    bundle.json with the sha256 of them all (the critic's included); returns the names written."""
    folder = epath.Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = tokenizer.vocab
    save_tensors(
        folder / PARAMS_FILE, params, info.dtype, metadata={"format": "flax-nnx", "step": str(info.step)}
    )
    (folder / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    (folder / VOCAB_FILE).write_text(
        json.dumps({"fingerprint": vocab.fingerprint(), "size": vocab.size, "tokens": vocab.strings}) + "\n"
    )
    written = [PARAMS_FILE, CONFIG_FILE, VOCAB_FILE]
    if note_facts is not None:
        (folder / FACTS_FILE).write_text(json.dumps(note_facts.to_dict(), indent=2) + "\n")
        written.append(FACTS_FILE)
    (folder / CARD_FILE).write_text(card)
    described = {**dataclasses.asdict(info), CHECKSUMS_KEY: file_checksums(folder)}
    (folder / BUNDLE_FILE).write_text(json.dumps(described, indent=2) + "\n")  # last: complete
    return [*written, CARD_FILE, BUNDLE_FILE]


def model_card(
    cfg: Config,
    info: BundleInfo,
    *,
    name: str,
    eval_report: Mapping[str, Any] | None,
    critic_auc: float | None,
) -> str:
    """README.md with the Hub's YAML header: what the model is, how to use it, what it scores."""
    m = cfg.model
    dataset = DATASET_TAGS.get(cfg.data.source, cfg.data.source)
    patterns = "/".join(m.patterns)
    shape = f"{m.n_layers} layers, d_model {m.d_model}, {m.n_heads} heads, context {m.context}"
    shape += f", {patterns} attention"
    lines = [
        "---",
        "library_name: musenet-jax",
        "license: apache-2.0",
        "tags:",
        *(f"- {tag}" for tag in ("music-generation", "symbolic-music", "midi", "musenet", "jax", "flax")),
        "datasets:",
        f"- {dataset}",
        "---",
        "",
        f"# {name}",
        "",
        f"A MuseNet-style transformer ([musenet-jax](https://github.com/musenet-jax/musenet-jax), "
        f"version {info.musenet_jax_version}) that composes MIDI for a composer style and up to ten "
        "instrument families.",
        "",
        f"- {info.parameters:,} parameters, stored in {info.dtype}; {shape}",
        f"- trained {info.step} steps of {cfg.train.global_batch} x {m.context} tokens on "
        f"`{cfg.data.source}` data (config `{cfg.name}`)",
        "",
        "## Use",
        "",
        "```",
        "pip install musenet-jax",
        f"musenet-jax generate --checkpoint hf://ORG/{name} --composer bach --instruments piano,strings \\",
        "    --seconds 30 --out samples/",
        "```",
        "",
        "`--checkpoint` also takes this folder's path. Fine-tune on your own MIDI with "
        "`musenet-jax train --init-from hf://ORG/NAME ...` (see the project README).",
        "",
        "## Scores",
        "",
    ]
    if eval_report is not None:
        bits, split = eval_report["bits_per_token"], eval_report["split"]
        size = f"{eval_report['pieces']} whole pieces, {eval_report['tokens']:,} tokens"
        lines += [
            f"Held-out **{bits:.3f} bits per token** on the `{split}` split ({size}); samples' statistics "
            "against the split's:",
            "",
            "```",
            format_table(dict(eval_report)),
            "```",
            "",
        ]
    else:
        lines += ["No evaluation was attached when this bundle was exported (`export --eval-json`).", ""]
    if critic_auc is not None:
        lines += [
            f"The inner critic tells held-out real pieces from generated ones with ROC AUC {critic_auc:.3f}.",
            "",
        ]
    lines += [
        "## Limits",
        "",
        "- Ten General MIDI instrument families (piano, strings, winds, brass, guitar, bass, organ, plucked, "
        "voice, drums); programs within a family are merged.",
        "- Composer styles are those of its training data; others are accepted but were not learned.",
        "- Its samples lie as far from real pieces as the statistics above say (in the split's standard "
        "deviations); harmony and long-range form are what a model of this size learns least.",
        "",
    ]
    return "\n".join(lines)
